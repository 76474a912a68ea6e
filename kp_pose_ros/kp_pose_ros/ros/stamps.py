"""builtin_interfaces/Time <-> integer nanoseconds, the one time unit core code uses (exact, unlike float seconds)."""
from __future__ import annotations

import operator

from builtin_interfaces.msg import Time

_NS_PER_S = 1_000_000_000
_MAX_SEC = 2**31 - 1  # Time.sec is int32


def stamp_to_ns(stamp: Time) -> int:
    return stamp.sec * _NS_PER_S + stamp.nanosec


def ns_to_stamp(ns: int) -> Time:
    ns = operator.index(ns)
    if ns < 0:
        raise ValueError(f'a ROS time stamp cannot be negative, got {ns} ns')
    sec, nanosec = divmod(ns, _NS_PER_S)
    if sec > _MAX_SEC:
        raise ValueError(f'{ns} ns does not fit builtin_interfaces/Time (int32 seconds)')
    return Time(sec=sec, nanosec=nanosec)


def age_s(clock, stamp: Time) -> float:
    """Seconds between `stamp` and the clock's now (negative for a stamp in the future)."""
    return (clock.now().nanoseconds - stamp_to_ns(stamp)) / 1e9
