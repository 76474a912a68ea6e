"""TF over tf2_msgs/TFMessage on /tf and /tf_static with tf2_ros's QoS, since tf2_ros itself is not on PyPI.

Wire-compatible with tf2_ros: RViz, robot_state_publisher and tf2 listeners in other processes see these frames.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Transform, TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from kp_pose_ros.core.transform_tree import TransformTree, check_frame_id
from kp_pose_ros.core.transforms import as_transform, make_transform, matrix_to_quat_xyzw, quat_xyzw_to_matrix
from kp_pose_ros.ros.stamps import stamp_to_ns

TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
# tf2_ros::TransformBroadcaster and TransformListener's dynamic subscription.
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
# tf2_ros::StaticTransformBroadcaster: the latched full set, one message deep.
TF_STATIC_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
# tf2_ros::TransformListener's static subscription: transient local so a late listener gets every latched set.
TF_STATIC_LISTENER_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                    reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)


def transform_stamped(parent: str, child: str, T, stamp: Time) -> TransformStamped:
    """T_parent_child as a TransformStamped (header.frame_id = parent, child_frame_id = child)."""
    check_frame_id(parent, 'parent frame')
    check_frame_id(child, 'child frame')
    if parent == child:
        raise ValueError(f'a frame cannot be its own parent: {parent!r}')
    T = as_transform(T, f'transform {parent!r} -> {child!r}')
    msg = TransformStamped()
    msg.header.frame_id = parent
    msg.header.stamp = stamp
    msg.child_frame_id = child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = map(float, T[:3, 3])
    q = matrix_to_quat_xyzw(T[:3, :3])
    (msg.transform.rotation.x, msg.transform.rotation.y,
     msg.transform.rotation.z, msg.transform.rotation.w) = map(float, q)
    return msg


def transform_from_msg(msg: TransformStamped | Transform) -> np.ndarray:
    """4x4 matrix of a Transform (or of a TransformStamped's transform)."""
    tf = msg.transform if isinstance(msg, TransformStamped) else msg
    t, q = tf.translation, tf.rotation
    return make_transform(quat_xyzw_to_matrix([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])


def _as_list(transforms: TransformStamped | Iterable[TransformStamped]) -> list[TransformStamped]:
    items = [transforms] if isinstance(transforms, TransformStamped) else list(transforms)
    for t in items:
        if not isinstance(t, TransformStamped):
            raise TypeError(f'expected geometry_msgs/TransformStamped, got {type(t).__name__}')
    return items


class TfBroadcaster:
    """Publishes dynamic transforms on /tf."""

    def __init__(self, node: Node) -> None:
        self._pub = node.create_publisher(TFMessage, TF_TOPIC, TF_QOS)

    def send(self, transforms: TransformStamped | Iterable[TransformStamped]) -> None:
        self._pub.publish(TFMessage(transforms=_as_list(transforms)))


class StaticTfBroadcaster:
    """Publishes static transforms on /tf_static, always as the full set.

    The topic keeps only the last message (transient local, depth 1), so like rclcpp's tf2_ros broadcaster this
    one remembers every transform it was given (a newer one for the same child frame replaces the older) and
    republishes all of them, otherwise a late subscriber would only see the last call's frames.
    """

    def __init__(self, node: Node) -> None:
        self._pub = node.create_publisher(TFMessage, TF_STATIC_TOPIC, TF_STATIC_QOS)
        self._by_child: dict[str, TransformStamped] = {}

    def send(self, transforms: TransformStamped | Iterable[TransformStamped]) -> None:
        for t in _as_list(transforms):
            self._by_child[t.child_frame_id] = t
        self._pub.publish(TFMessage(transforms=list(self._by_child.values())))


class TfListener:
    """Feeds a TransformTree from /tf and /tf_static; invalid transforms are logged and skipped, never raised."""

    def __init__(self, node: Node, tree: TransformTree) -> None:
        self._tree = tree
        self._logger = node.get_logger()
        self._subs = [
            node.create_subscription(TFMessage, TF_TOPIC, lambda m: self._on_tf(m, static=False), TF_QOS),
            node.create_subscription(TFMessage, TF_STATIC_TOPIC, lambda m: self._on_tf(m, static=True),
                                     TF_STATIC_LISTENER_QOS),
        ]

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        for t in msg.transforms:
            try:
                self._tree.set_transform(t.header.frame_id, t.child_frame_id, transform_from_msg(t),
                                         stamp_to_ns(t.header.stamp), static=static)
            except ValueError as exc:
                self._logger.warning(f'ignoring transform {t.header.frame_id!r} -> {t.child_frame_id!r}: {exc}',
                                     throttle_duration_sec=5.0)
