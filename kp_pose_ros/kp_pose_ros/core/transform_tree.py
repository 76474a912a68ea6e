"""A frame tree with time-stamped edges: the part of a tf2 buffer the suite needs, since tf2_ros is not on PyPI.

Semantics follow tf2 where it matters to users: one parent per child (re-parenting replaces the edge), static edges
ignore time, dynamic edges keep a bounded history and are interpolated between samples (linear translation, slerp
rotation), and a lookup with no stamp uses the latest time all dynamic edges on the path have in common.
Unlike tf2, a stamp slightly outside an edge's history (within `tolerance_ns`) uses the nearest sample instead of
failing, because camera frames and joint states from separate drivers are routinely a few milliseconds apart.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

import numpy as np

from kp_pose_ros.core.transforms import as_transform, interpolate_transform, invert_transform


@dataclass
class _Edge:
    parent: str
    static: bool
    stamps: list[int]  # sorted; one sample for a static edge
    transforms: list[np.ndarray]


def _ns_str(stamp_ns: int) -> str:
    return f'{stamp_ns / 1e9:.6f} s'


def check_frame_id(frame: str, name: str) -> None:
    """Refuse ids tf2 refuses (empty, or with a leading slash), naming the offending argument."""
    if not isinstance(frame, str) or not frame:
        raise ValueError(f'{name} must be a non-empty string, got {frame!r}')
    if frame.startswith('/'):
        raise ValueError(f"{name} {frame!r} starts with '/': tf2 frame ids must not")


class TransformTree:
    """Thread-safe store of parent->child transforms answering T_target_source queries at a time."""

    def __init__(self, cache_time_ns: int = 10_000_000_000, tolerance_ns: int = 50_000_000) -> None:
        if cache_time_ns <= 0 or tolerance_ns < 0:
            raise ValueError(f'cache_time_ns must be > 0 and tolerance_ns >= 0, got {cache_time_ns}, {tolerance_ns}')
        self._cache_ns = int(cache_time_ns)
        self._tolerance_ns = int(tolerance_ns)
        self._edges: dict[str, _Edge] = {}  # keyed by child frame
        self._lock = threading.Lock()

    def set_transform(self, parent: str, child: str, T, stamp_ns: int, static: bool = False) -> None:
        """Store T_parent_child (child coordinates -> parent coordinates) at stamp_ns."""
        check_frame_id(parent, 'parent frame')
        check_frame_id(child, 'child frame')
        if parent == child:
            raise ValueError(f'a frame cannot be its own parent: {parent!r}')
        T = as_transform(T, f'transform {parent!r} -> {child!r}')
        stamp_ns = int(stamp_ns)
        with self._lock:
            ancestor = parent
            while ancestor in self._edges:
                ancestor = self._edges[ancestor].parent
                if ancestor == child:
                    raise ValueError(f'making {parent!r} the parent of {child!r} would create a loop in the tree')
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static or static:
                self._edges[child] = _Edge(parent, static, [stamp_ns], [T])
                return
            if stamp_ns < edge.stamps[-1] - self._cache_ns:
                raise ValueError(
                    f'transform {parent!r} -> {child!r} at {_ns_str(stamp_ns)} is older than the cached history '
                    f'(latest {_ns_str(edge.stamps[-1])}, cache {self._cache_ns / 1e9:g} s)')
            i = bisect.bisect_left(edge.stamps, stamp_ns)
            if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
                edge.transforms[i] = T
            else:
                edge.stamps.insert(i, stamp_ns)
                edge.transforms.insert(i, T)
            expired = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self._cache_ns)
            del edge.stamps[:expired], edge.transforms[:expired]

    def frames(self) -> list[str]:
        """All frames known to the tree, sorted."""
        with self._lock:
            return self._known_frames()

    def _known_frames(self) -> list[str]:
        return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target_frame, source_frame, stamp_ns)
        except LookupError:
            return False
        return True

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int | None = None) -> np.ndarray:
        """T_target_source: maps points in source_frame to target_frame. Raises LookupError saying what is missing."""
        check_frame_id(target_frame, 'target frame')
        check_frame_id(source_frame, 'source frame')
        if target_frame == source_frame:
            return np.eye(4)
        with self._lock:
            source_chain = self._chain_to_root(source_frame)
            target_chain = self._chain_to_root(target_frame)
            common = next((f for f in source_chain if f in set(target_chain)), None)
            if common is None:
                raise LookupError(
                    f'frames {target_frame!r} and {source_frame!r} are not connected: their roots are '
                    f'{target_chain[-1]!r} and {source_chain[-1]!r}')
            # Edges are keyed by their child: the frames below the common ancestor on each side.
            source_edges = source_chain[:source_chain.index(common)]
            target_edges = target_chain[:target_chain.index(common)]
            if stamp_ns is None:
                stamp_ns = self._latest_common_stamp(source_edges + target_edges)
            else:
                stamp_ns = int(stamp_ns)
            T_common_source = self._compose_up(source_edges, stamp_ns)
            T_common_target = self._compose_up(target_edges, stamp_ns)
        return invert_transform(T_common_target) @ T_common_source

    def _chain_to_root(self, frame: str) -> list[str]:
        known = self._known_frames()
        if frame not in known:
            shown = ', '.join(known[:20]) + (' ...' if len(known) > 20 else '')
            raise LookupError(f'frame {frame!r} does not exist in the tree (known frames: {shown or "none"})')
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _latest_common_stamp(self, children: list[str]) -> int | None:
        dynamic = [self._edges[c] for c in children if not self._edges[c].static]
        if not dynamic:
            return None
        latest = min(e.stamps[-1] for e in dynamic)
        oldest = max(e.stamps[0] for e in dynamic)
        if latest + self._tolerance_ns < oldest:
            raise LookupError(
                f'no common time on the path: histories span disjoint intervals (an edge ends at {_ns_str(latest)}, '
                f'another starts at {_ns_str(oldest)})')
        return latest

    def _compose_up(self, children: list[str], stamp_ns: int | None) -> np.ndarray:
        T = np.eye(4)
        for child in children:
            T = self._edge_at(child, stamp_ns) @ T
        return T

    def _edge_at(self, child: str, stamp_ns: int | None) -> np.ndarray:
        edge = self._edges[child]
        if edge.static or stamp_ns is None:
            return edge.transforms[-1]
        stamps = edge.stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return edge.transforms[i]
        if 0 < i < len(stamps):
            fraction = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
            return interpolate_transform(edge.transforms[i - 1], edge.transforms[i], fraction)
        nearest = 0 if i == 0 else len(stamps) - 1
        if abs(stamps[nearest] - stamp_ns) <= self._tolerance_ns:
            return edge.transforms[nearest]
        raise LookupError(
            f'transform {edge.parent!r} -> {child!r} is not available at {_ns_str(stamp_ns)}: history covers '
            f'{_ns_str(stamps[0])} .. {_ns_str(stamps[-1])} (tolerance {self._tolerance_ns / 1e6:g} ms)')
