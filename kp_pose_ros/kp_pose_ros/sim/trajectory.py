"""Joint-space trajectories for the simulated arm, as pure functions of time.

A trajectory is queried by time (`.at(t)`), never stepped, so a frame rendered at time t is the same however fast or
irregularly the caller renders: the sim camera node and the dataset writer stay deterministic for a seed. Segments
between waypoints follow a minimum-jerk profile (zero velocity and acceleration at each waypoint), which looks like
a robot moving point to point and keeps the motion inside the box of joint limits (it never overshoots a waypoint).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Peak of d/dtau of the minimum-jerk profile 10 tau^3 - 15 tau^4 + 6 tau^5 (reached at tau = 0.5).
_MIN_JERK_PEAK_RATE = 1.875


def min_jerk(tau: np.ndarray | float) -> np.ndarray | float:
    """Minimum-jerk progress in [0, 1] for normalised time tau in [0, 1] (clipped outside)."""
    tau = np.clip(tau, 0.0, 1.0)
    return tau ** 3 * (10.0 + tau * (-15.0 + 6.0 * tau))


def _check_limits(limits: np.ndarray) -> np.ndarray:
    limits = np.asarray(limits, dtype=float)
    if limits.ndim != 2 or limits.shape[1] != 2 or limits.shape[0] == 0:
        raise ValueError(f'joint limits must have shape (num_joints, 2) as (lower, upper) rows, got {limits.shape}')
    if not np.all(np.isfinite(limits)):
        raise ValueError('joint limits must be finite (a continuous joint needs explicit bounds here)')
    if np.any(limits[:, 0] >= limits[:, 1]):
        bad = np.nonzero(limits[:, 0] >= limits[:, 1])[0].tolist()
        raise ValueError(f'joint limits need lower < upper; violated for joints {bad}')
    return limits


def _check_time(t: float) -> float:
    t = float(t)
    if not np.isfinite(t) or t < 0.0:
        raise ValueError(f'trajectory time must be finite and >= 0, got {t}')
    return t


class RandomWaypointTrajectory:
    """Point-to-point motion through random waypoints drawn uniformly inside `limits`.

    Each segment lasts just long enough that no joint exceeds `speed` (rad/s) at the profile's peak, and at least
    `min_segment_s`. Waypoints are drawn lazily in order from one Generator seeded by `seed`, so `.at(t)` depends only
    on (limits, seed, speed, t), whatever order times are queried in. `accept(q) -> bool` may reject waypoints (for
    instance ones where the arm hits the floor); segments between accepted waypoints are not checked.
    """

    def __init__(self, limits: np.ndarray, seed: int, speed: float = 0.4, min_segment_s: float = 0.5,
                 accept: Callable[[np.ndarray], bool] | None = None, max_rejections: int = 1000):
        self.limits = _check_limits(limits)
        if not (np.isfinite(speed) and speed > 0.0):
            raise ValueError(f'speed must be a positive number of rad/s, got {speed}')
        if not (np.isfinite(min_segment_s) and min_segment_s > 0.0):
            raise ValueError(f'min_segment_s must be positive, got {min_segment_s}')
        self.speed = float(speed)
        self.min_segment_s = float(min_segment_s)
        self._accept = accept
        self._max_rejections = int(max_rejections)
        self._rng = np.random.default_rng(seed)
        self._waypoints = [self._draw_waypoint()]
        self._start_times = [0.0]  # _start_times[k]: time at which the arm is at waypoint k

    @property
    def num_joints(self) -> int:
        return self.limits.shape[0]

    def _draw_waypoint(self) -> np.ndarray:
        for _ in range(self._max_rejections):
            q = self._rng.uniform(self.limits[:, 0], self.limits[:, 1])
            if self._accept is None or self._accept(q):
                return q
        raise RuntimeError(f'accept() rejected {self._max_rejections} random waypoints in a row; '
                           'it is too strict for these joint limits')

    def _extend_to(self, t: float) -> None:
        while self._start_times[-1] <= t:
            q_next = self._draw_waypoint()
            step = np.max(np.abs(q_next - self._waypoints[-1]))
            duration = max(_MIN_JERK_PEAK_RATE * step / self.speed, self.min_segment_s)
            self._waypoints.append(q_next)
            self._start_times.append(self._start_times[-1] + duration)

    def at(self, t: float) -> np.ndarray:
        """Joint positions (num_joints,) at time t >= 0 seconds."""
        t = _check_time(t)
        self._extend_to(t)
        k = int(np.searchsorted(self._start_times, t, side='right')) - 1
        t0, t1 = self._start_times[k], self._start_times[k + 1]
        s = min_jerk((t - t0) / (t1 - t0))
        return self._waypoints[k] + s * (self._waypoints[k + 1] - self._waypoints[k])


class ScriptedTrajectory:
    """Loops through given joint vectors: waypoint k to k+1 takes durations[k] seconds, the last one returns to the
    first. Handy for a repeatable demo motion or a test that needs known poses at known times."""

    def __init__(self, waypoints: np.ndarray, durations: np.ndarray | list[float]):
        waypoints = np.asarray(waypoints, dtype=float)
        durations = np.asarray(durations, dtype=float)
        if waypoints.ndim != 2 or waypoints.shape[0] < 1 or waypoints.shape[1] < 1:
            raise ValueError(f'waypoints must have shape (num_waypoints, num_joints), got {waypoints.shape}')
        if not np.all(np.isfinite(waypoints)):
            raise ValueError('waypoints must be finite')
        if durations.shape != (waypoints.shape[0],):
            raise ValueError(f'need one duration per waypoint (segment k goes from waypoint k to k+1, the last back '
                             f'to the first): {waypoints.shape[0]} waypoints, durations of shape {durations.shape}')
        if not np.all(np.isfinite(durations)) or np.any(durations <= 0.0):
            raise ValueError(f'durations must be positive seconds, got {durations.tolist()}')
        self.waypoints = waypoints
        self.durations = durations
        self._start_times = np.concatenate([[0.0], np.cumsum(durations)])

    @property
    def period(self) -> float:
        """Seconds for one full loop."""
        return float(self._start_times[-1])

    def at(self, t: float) -> np.ndarray:
        """Joint positions (num_joints,) at time t >= 0 seconds."""
        t = _check_time(t) % self.period
        k = min(int(np.searchsorted(self._start_times, t, side='right')) - 1, len(self.durations) - 1)
        s = min_jerk((t - self._start_times[k]) / self.durations[k])
        q0 = self.waypoints[k]
        q1 = self.waypoints[(k + 1) % len(self.waypoints)]
        return q0 + s * (q1 - q0)
