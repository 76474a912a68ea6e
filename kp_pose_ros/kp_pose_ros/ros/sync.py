"""rclpy subscriptions matched by header.stamp through core.sync (message_filters is not on PyPI)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from kp_pose_ros.core.sync import ApproximateTimeSynchronizer
from kp_pose_ros.ros.stamps import stamp_to_ns


class SyncedSubscriber:
    """Calls `callback(*msgs)` (one message per topic, in topic order) for each approximately simultaneous set.

    The default QoS is sensor data (best effort), which also matches reliable publishers such as camera drivers.
    All subscriptions share one mutually exclusive callback group, so the synchronizer is never entered
    concurrently even under a MultiThreadedExecutor.
    """

    def __init__(self, node: Node, topics: Sequence[tuple[type, str]], callback: Callable[..., None],
                 slop_s: float = 0.02, queue_size: int = 10,
                 qos: QoSProfile | int = qos_profile_sensor_data) -> None:
        if not topics:
            raise ValueError('SyncedSubscriber needs at least one (msg_type, topic)')
        for msg_type, topic in topics:
            if 'header' not in msg_type.get_fields_and_field_types():
                raise TypeError(f'{msg_type.__name__} on {topic!r} has no header.stamp to synchronise on')
        if slop_s < 0:
            raise ValueError(f'slop_s must be >= 0, got {slop_s}')
        self._sync = ApproximateTimeSynchronizer(len(topics), int(round(slop_s * 1e9)), queue_size)
        self._callback = callback
        group = MutuallyExclusiveCallbackGroup()
        self._subs = [
            node.create_subscription(msg_type, topic, self._make_handler(index), qos, callback_group=group)
            for index, (msg_type, topic) in enumerate(topics)
        ]

    @property
    def dropped(self) -> int:
        """Messages the synchronizer discarded without a match (see ApproximateTimeSynchronizer.dropped)."""
        return self._sync.dropped

    def _make_handler(self, index: int) -> Callable:
        def handle(msg) -> None:
            for matched in self._sync.add(index, stamp_to_ns(msg.header.stamp), msg):
                self._callback(*matched)
        return handle
