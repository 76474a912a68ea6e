"""Instance ids that stay the same from frame to frame, so that each object keeps its TF frame and marker, and so that
a symmetric object's published pose can be made to follow its own previous pose (pose.canonical_rotation).

Detections carry no identity, so ids come from positions: per class, the detections of a frame are assigned to the
live tracks by minimum total centre distance (Hungarian, not greedy nearest: two nearby objects of one class moving
together would otherwise swap), each pair gated by ``max_distance_m``. Ids are never reused, not even after a reset,
so a consumer never mixes two objects under one id.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

# Cost of a pair beyond the gate: larger than any sum of gated distances, so the assignment only uses such a pair
# when nothing else is left, and it is then dropped.
_FORBIDDEN = 1e9


@dataclass
class _Track:
    class_id: int
    position: np.ndarray
    last_seen_s: float
    pose: np.ndarray | None = None


class InstanceTracker:
    """Stable ids for detected instances. Not thread-safe: one caller (the pose node's callback)."""

    def __init__(self, max_distance_m: float = 0.05, max_age_s: float = 1.0):
        if not max_distance_m > 0 or not max_age_s > 0:
            raise ValueError(f'need max_distance_m > 0 and max_age_s > 0, got {max_distance_m} and {max_age_s}')
        self.max_distance_m = float(max_distance_m)
        self.max_age_s = float(max_age_s)
        self._tracks: dict[int, _Track] = {}
        self._next_id = itertools.count()
        self._last_stamp_s = -math.inf

    def reset(self) -> None:
        """Forget every track (a new scene, a bag that looped); new ids continue after the old ones."""
        self._tracks.clear()
        self._last_stamp_s = -math.inf

    def update(self, stamp_s: float, class_ids, positions) -> np.ndarray:
        """Ids (N,) of a frame's detections: class ids (N,) and object centres (N, 3) in one fixed frame (metres).
        Rows with a non-finite position (no pose) get -1 and touch no track. A stamp older than the previous one
        (a looped bag, a restarted simulation) resets the tracker first."""
        classes = np.asarray(class_ids).reshape(-1).astype(np.int64)
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(classes), 3):
            raise ValueError(f'positions must have shape ({len(classes)}, 3), got {positions.shape}')
        stamp_s = float(stamp_s)
        if stamp_s < self._last_stamp_s:
            self.reset()
        self._last_stamp_s = stamp_s
        self._tracks = {i: t for i, t in self._tracks.items() if stamp_s - t.last_seen_s <= self.max_age_s}

        ids = np.full(len(classes), -1, dtype=np.int64)
        valid = np.isfinite(positions).all(axis=1)
        for class_id in np.unique(classes[valid]):
            rows = np.flatnonzero(valid & (classes == class_id))
            track_ids = [i for i, t in self._tracks.items() if t.class_id == class_id]
            if track_ids:
                previous = np.array([self._tracks[i].position for i in track_ids])
                distance = np.linalg.norm(positions[rows, None] - previous[None], axis=2)
                cost = np.where(distance <= self.max_distance_m, distance, _FORBIDDEN)
                for r, c in zip(*linear_sum_assignment(cost)):
                    if cost[r, c] < _FORBIDDEN:
                        ids[rows[r]] = track_ids[c]
            for r in rows:
                if ids[r] < 0:
                    ids[r] = next(self._next_id)
                    self._tracks[int(ids[r])] = _Track(int(class_id), positions[r].copy(), stamp_s)
                else:
                    track = self._tracks[int(ids[r])]
                    track.position, track.last_seen_s = positions[r].copy(), stamp_s
        return ids

    def set_pose(self, track_id: int, T) -> None:
        """Remember the pose published for a live track (the reference of its next canonical_rotation)."""
        self._tracks[int(track_id)].pose = np.array(T, dtype=np.float64)

    def pose(self, track_id: int) -> np.ndarray | None:
        """The pose last set for a live track, None when none was or the track is gone."""
        track = self._tracks.get(int(track_id))
        return None if track is None or track.pose is None else track.pose.copy()

    def __len__(self) -> int:
        """Live tracks."""
        return len(self._tracks)
