"""Topic rate / latency / size statistics, the `ros2 topic hz|delay|bw` the PyPI wheels lack, for the CLI and
benchmarks. Latency is receive time minus header.stamp, so it includes serialisation and transport."""
from __future__ import annotations

import time
from importlib import import_module

import numpy as np
from rclpy.serialization import deserialize_message

from kp_pose_ros.ros.stamps import stamp_to_ns


def message_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the message class."""
    parts = type_name.split('/')
    if len(parts) != 3:
        raise ValueError(f"'{type_name}' is not a ROS type name like 'sensor_msgs/msg/Image'")
    return getattr(import_module(f'{parts[0]}.{parts[1]}'), parts[2])


def topic_type(node, topic: str, executor, timeout_s: float = 5.0) -> str:
    """Wait for discovery of `topic` and return its type name."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, types in node.get_topic_names_and_types():
            if name == topic and types:
                return types[0]
        executor.spin_once(timeout_sec=0.05)
    raise TimeoutError(f"topic '{topic}' not seen within {timeout_s:g} s "
                       '(is the publisher running, same ROS_DOMAIN_ID?)')


class TopicStats:
    """Subscribes raw (serialised) to one topic and records arrival times, sizes and header latencies."""

    def __init__(self, node, topic: str, type_name: str, qos):
        self.msg_cls = message_class(type_name)
        self.clock = node.get_clock()
        self.arrivals_ns: list[int] = []
        self.latencies_ms: list[float] = []
        self.sizes: list[int] = []
        self.sub = node.create_subscription(self.msg_cls, topic, self._on_raw, qos, raw=True)

    def _on_raw(self, data: bytes) -> None:
        now = self.clock.now().nanoseconds
        self.arrivals_ns.append(now)
        self.sizes.append(len(data))
        header = getattr(deserialize_message(data, self.msg_cls), 'header', None)
        if header is not None:
            self.latencies_ms.append((now - stamp_to_ns(header.stamp)) / 1e6)

    def summary(self) -> dict:
        n = len(self.arrivals_ns)
        out = {'messages': n}
        if n >= 2:
            span_s = (self.arrivals_ns[-1] - self.arrivals_ns[0]) / 1e9
            out['rate_hz'] = (n - 1) / span_s if span_s > 0 else float('nan')
            gaps = np.diff(self.arrivals_ns) / 1e6
            out['gap_ms_max'] = float(gaps.max())
        if self.sizes:
            out['bytes_mean'] = float(np.mean(self.sizes))
        if self.latencies_ms:
            lat = np.asarray(self.latencies_ms)
            out['latency_ms_median'] = float(np.median(lat))
            out['latency_ms_p95'] = float(np.percentile(lat, 95))
        return out
