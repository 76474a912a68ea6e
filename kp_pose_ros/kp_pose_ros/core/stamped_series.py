"""A time-indexed history for looking up a signal at another stream's stamp, e.g. a 1 kHz arm's joint states at a
30 Hz camera's image stamp: kept by time span (not by count, which at 1 kHz would hold only milliseconds), read
from a worker thread while the executor appends."""
from __future__ import annotations

import bisect
import threading
from typing import Any

import numpy as np


class StampedSeries:
    """Items with integer nanosecond stamps over the last ``span_ns`` (relative to the newest), at most
    ``max_items``. Items arriving out of order are placed by stamp."""

    def __init__(self, span_ns: int, max_items: int = 100000) -> None:
        if span_ns <= 0 or max_items < 1:
            raise ValueError(f'span_ns and max_items must be positive, got {span_ns} and {max_items}')
        self.span_ns = int(span_ns)
        self.max_items = int(max_items)
        self._stamps: list[int] = []
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, item: Any) -> None:
        with self._lock:
            index = bisect.bisect_right(self._stamps, stamp_ns)
            self._stamps.insert(index, stamp_ns)
            self._items.insert(index, item)
            oldest = self._stamps[-1] - self.span_ns
            drop = max(bisect.bisect_left(self._stamps, oldest), len(self._stamps) - self.max_items)
            if drop > 0:
                del self._stamps[:drop], self._items[:drop]

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._items.clear()

    def bracket(self, stamp_ns: int) -> tuple[tuple[int, Any] | None, tuple[int, Any] | None]:
        """The newest (stamp, item) at or before ``stamp_ns`` and the oldest after it (None where there is none)."""
        with self._lock:
            index = bisect.bisect_right(self._stamps, stamp_ns)
            before = (self._stamps[index - 1], self._items[index - 1]) if index > 0 else None
            after = (self._stamps[index], self._items[index]) if index < len(self._stamps) else None
        return before, after


def interpolate_at(stamp_ns: int, before: tuple[int, np.ndarray] | None, after: tuple[int, np.ndarray] | None,
                   max_gap_ns: int) -> np.ndarray | None:
    """The value at ``stamp_ns`` from its neighbours (stamp, vector): linear between them when both are within
    ``max_gap_ns``, the nearer one alone when only it is (no extrapolation), None when neither is."""
    near = [s for s in (before, after) if s is not None and abs(s[0] - stamp_ns) <= max_gap_ns]
    if not near:
        return None
    if len(near) == 1 or near[0][0] == near[1][0]:
        return np.asarray(near[0][1], dtype=np.float64)
    (t0, v0), (t1, v1) = near
    alpha = (stamp_ns - t0) / (t1 - t0)
    return (1.0 - alpha) * np.asarray(v0, np.float64) + alpha * np.asarray(v1, np.float64)
