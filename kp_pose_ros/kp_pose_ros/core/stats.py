"""Sliding-window statistics with bounded memory, for node diagnostics and benchmarks (ROS-free).

`RateWindow` counts events (message arrivals, drops, errors) over the last `window_s` seconds; `LatencyWindow` keeps
the last `maxlen` durations and reports their median and 95th percentile. Both hold at most `maxlen` samples, whatever
the rate or how long the node runs. Times are integer nanoseconds from whichever clock the caller uses (the
diagnostics use the monotonic clock, so rates stay right under simulated time and clock jumps).
"""
from __future__ import annotations

from collections import deque
from typing import Optional

import numpy as np

_NS_PER_S = 1_000_000_000


class RateWindow:
    """Events over a sliding time window.

    ``rate_hz(now)`` is (n - 1) / (now - oldest) over the n events of the last ``window_s`` seconds: the steady rate
    of a regular stream, decaying towards 0 once events stop, and 0 with fewer than 2 events in the window. At most
    ``maxlen`` timestamps are kept (the newest), so the rate of a stream faster than maxlen / window_s is measured
    over a shorter span, still correctly.
    """

    def __init__(self, window_s: float = 5.0, maxlen: int = 1000):
        if window_s <= 0:
            raise ValueError(f'window_s must be positive, got {window_s}')
        if maxlen < 2:
            raise ValueError(f'maxlen must be at least 2, got {maxlen}')
        self.window_ns = int(window_s * _NS_PER_S)
        self._times: deque = deque(maxlen=maxlen)
        self.last_ns: Optional[int] = None
        self.count = 0

    def tick(self, now_ns: int) -> None:
        """One event at ``now_ns``."""
        now_ns = int(now_ns)
        self._times.append(now_ns)
        self.last_ns = now_ns
        self.count += 1

    def _prune(self, now_ns: int) -> None:
        oldest_kept = now_ns - self.window_ns
        times = self._times
        while times and times[0] <= oldest_kept:
            times.popleft()

    def recent(self, now_ns: int) -> int:
        """Events in the last window (at most maxlen)."""
        self._prune(int(now_ns))
        return len(self._times)

    def rate_hz(self, now_ns: int) -> float:
        """Events per second over the last window; 0.0 with fewer than 2 events in it."""
        now_ns = int(now_ns)
        self._prune(now_ns)
        n = len(self._times)
        if n < 2:
            return 0.0
        span_ns = max(now_ns, self._times[-1]) - self._times[0]
        return (n - 1) * _NS_PER_S / span_ns if span_ns > 0 else 0.0

    def age_s(self, now_ns: int) -> float:
        """Seconds since the last event; inf if there was none."""
        return float('inf') if self.last_ns is None else (int(now_ns) - self.last_ns) / _NS_PER_S


class LatencyWindow:
    """The last ``maxlen`` durations (ms); median and 95th percentile (linear interpolation), NaN when empty."""

    def __init__(self, maxlen: int = 200):
        if maxlen < 1:
            raise ValueError(f'maxlen must be at least 1, got {maxlen}')
        self._samples: deque = deque(maxlen=maxlen)

    def add(self, ms: float) -> None:
        self._samples.append(float(ms))

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float:
        if not self._samples:
            return float('nan')
        return float(np.percentile(np.fromiter(self._samples, dtype=np.float64, count=len(self._samples)), q))

    def median(self) -> float:
        return self.percentile(50.0)

    def p95(self) -> float:
        return self.percentile(95.0)
