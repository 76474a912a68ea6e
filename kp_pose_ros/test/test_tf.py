"""TransformTree (tf2 buffer semantics) and TF over real rclpy: broadcasters, static latching, listener."""
import numpy as np
import pytest
from conftest import spin_until
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.transform_tree import TransformTree
from kp_pose_ros.core.transforms import invert_transform, make_transform, rotation_error_deg

S = 1_000_000_000
MS = 1_000_000


def pose(deg_z=0.0, t=(0.0, 0.0, 0.0), deg_x=0.0):
    return make_transform(Rotation.from_euler('zx', [deg_z, deg_x], degrees=True).as_matrix(), t)


@pytest.fixture
def tree():
    """world -> base -> link1 -> link2, world -> camera_link -> camera_optical (static)."""
    tree = TransformTree()
    tree.set_transform('world', 'base', pose(30, (1, 0, 0)), 0, static=True)
    tree.set_transform('base', 'link1', pose(45, (0, 0, 0.3)), 1 * S)
    tree.set_transform('link1', 'link2', pose(-20, (0.4, 0, 0), deg_x=10), 1 * S)
    tree.set_transform('world', 'camera_link', pose(180, (2, 0, 1)), 0, static=True)
    tree.set_transform('camera_link', 'camera_optical', pose(-90, deg_x=-90), 0, static=True)
    return tree


def test_lookup_through_common_ancestor(tree):
    expected = (invert_transform(pose(-90, deg_x=-90)) @ invert_transform(pose(180, (2, 0, 1)))
                @ pose(30, (1, 0, 0)) @ pose(45, (0, 0, 0.3)) @ pose(-20, (0.4, 0, 0), deg_x=10))
    np.testing.assert_allclose(tree.lookup('camera_optical', 'link2', 1 * S), expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup('link2', 'camera_optical', 1 * S), invert_transform(expected), atol=1e-12)
    # Common ancestor below the root: world is never touched.
    np.testing.assert_allclose(tree.lookup('link1', 'link2', 1 * S), pose(-20, (0.4, 0, 0), deg_x=10), atol=1e-12)
    np.testing.assert_allclose(tree.lookup('base', 'base'), np.eye(4))
    assert tree.frames() == ['base', 'camera_link', 'camera_optical', 'link1', 'link2', 'world']


def test_static_edges_ignore_time_dynamic_edges_interpolate(tree):
    np.testing.assert_allclose(tree.lookup('world', 'camera_optical', 1000 * S),
                               tree.lookup('world', 'camera_optical', 0), atol=1e-12)
    tree.set_transform('base', 'link1', pose(90, (0, 0, 0.5)), 2 * S)
    mid = tree.lookup('base', 'link1', 1500 * MS)
    assert rotation_error_deg(mid, pose(67.5)) < 1e-9
    np.testing.assert_allclose(mid[:3, 3], [0, 0, 0.4], atol=1e-12)
    # Within the 50 ms tolerance past either end: the nearest sample.
    np.testing.assert_allclose(tree.lookup('base', 'link1', 2 * S + 40 * MS), pose(90, (0, 0, 0.5)), atol=1e-12)
    np.testing.assert_allclose(tree.lookup('base', 'link1', 1 * S - 40 * MS), pose(45, (0, 0, 0.3)), atol=1e-12)
    with pytest.raises(LookupError, match=r"'base' -> 'link1' is not available at 2\.100000 s.*1\.000000 s \.\. "
                                          r"2\.000000 s"):
        tree.lookup('world', 'link1', 2100 * MS)
    assert not tree.can_transform('world', 'link1', 2100 * MS)
    assert tree.can_transform('world', 'link1', 2 * S)


def test_latest_lookup_uses_the_latest_common_time(tree):
    tree.set_transform('base', 'link1', pose(90, (0, 0, 0.5)), 2 * S)
    tree.set_transform('link1', 'link2', pose(-20, (0.4, 0, 0), deg_x=10), 1500 * MS)
    latest = tree.lookup('base', 'link2')  # link2's edge ends at 1.5 s, so link1's is interpolated there
    np.testing.assert_allclose(latest, tree.lookup('base', 'link2', 1500 * MS), atol=1e-12)
    np.testing.assert_allclose(tree.lookup('base', 'link1'), pose(90, (0, 0, 0.5)), atol=1e-12)


def test_history_is_bounded():
    tree = TransformTree(cache_time_ns=10 * S)
    for k in range(200):  # 20 s at 10 Hz
        tree.set_transform('odom', 'base', pose(t=(k * 0.1, 0, 0)), k * S // 10)
    np.testing.assert_allclose(tree.lookup('odom', 'base', 15 * S)[:3, 3], [15, 0, 0], atol=1e-9)
    with pytest.raises(LookupError, match='history covers 9.900000 s'):
        tree.lookup('odom', 'base', 5 * S)
    with pytest.raises(ValueError, match='older than the cached history'):
        tree.set_transform('odom', 'base', np.eye(4), 1 * S)


def test_reparenting_replaces_the_edge(tree):
    tree.set_transform('link2', 'camera_link', pose(0, (0, 0, 0.1)), 1 * S, static=True)  # camera on the wrist
    np.testing.assert_allclose(tree.lookup('link2', 'camera_optical'), pose(0, (0, 0, 0.1)) @ pose(-90, deg_x=-90),
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup('world', 'camera_link', 1 * S),
                               tree.lookup('world', 'link2', 1 * S) @ pose(0, (0, 0, 0.1)), atol=1e-12)


def test_missing_and_disconnected_frames_raise_clearly(tree):
    with pytest.raises(LookupError, match=r"frame 'gripper' does not exist.*known frames: base, camera_link"):
        tree.lookup('world', 'gripper')
    tree.set_transform('map', 'odom', np.eye(4), 0, static=True)
    with pytest.raises(LookupError, match=r"'odom' and 'link1' are not connected: their roots are 'map' and 'world'"):
        tree.lookup('odom', 'link1')
    with pytest.raises(ValueError, match='would create a loop'):
        tree.set_transform('link2', 'base', np.eye(4), 1 * S)
    with pytest.raises(ValueError, match="starts with '/'"):
        tree.set_transform('/world', 'x', np.eye(4), 0)
    with pytest.raises(ValueError, match='own parent'):
        tree.set_transform('x', 'x', np.eye(4), 0)
    with pytest.raises(ValueError, match='not a rotation'):
        tree.set_transform('world', 'x', np.diag([1.0, 1.0, 2.0, 1.0]), 0)


def test_stamp_conversions():
    from builtin_interfaces.msg import Time

    from kp_pose_ros.ros.stamps import ns_to_stamp, stamp_to_ns

    stamp = ns_to_stamp(1_700_000_000_123_456_789)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert stamp_to_ns(stamp) == 1_700_000_000_123_456_789
    assert stamp_to_ns(Time(sec=2, nanosec=5)) == 2_000_000_005
    with pytest.raises(ValueError, match='negative'):
        ns_to_stamp(-1)
    with pytest.raises(ValueError, match='int32'):
        ns_to_stamp(2**31 * S)


def test_transform_message_round_trip_and_qos():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from kp_pose_ros.ros.stamps import ns_to_stamp
    from kp_pose_ros.ros.tf import TF_QOS, TF_STATIC_LISTENER_QOS, TF_STATIC_QOS, transform_from_msg, transform_stamped

    T = pose(123, (0.1, -0.2, 0.3), deg_x=40)
    msg = transform_stamped('base', 'tool', T, ns_to_stamp(5 * S))
    assert (msg.header.frame_id, msg.child_frame_id, msg.header.stamp.sec) == ('base', 'tool', 5)
    assert msg.transform.rotation.w >= 0
    np.testing.assert_allclose(transform_from_msg(msg), T, atol=1e-12)
    np.testing.assert_allclose(transform_from_msg(msg.transform), T, atol=1e-12)
    with pytest.raises(ValueError, match="starts with '/'"):
        transform_stamped('/base', 'tool', T, ns_to_stamp(0))
    msg.transform.rotation.w = 3.0
    with pytest.raises(ValueError, match='not normalised'):
        transform_from_msg(msg)

    assert (TF_QOS.depth, TF_QOS.reliability, TF_QOS.durability) == (
        100, ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)
    assert (TF_STATIC_QOS.depth, TF_STATIC_QOS.reliability, TF_STATIC_QOS.durability) == (
        1, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)
    assert (TF_STATIC_LISTENER_QOS.depth, TF_STATIC_LISTENER_QOS.durability) == (
        100, DurabilityPolicy.TRANSIENT_LOCAL)


def test_static_broadcaster_latches_the_full_set_for_late_subscribers(ros_node):
    from tf2_msgs.msg import TFMessage

    from kp_pose_ros.ros.stamps import ns_to_stamp
    from kp_pose_ros.ros.tf import TF_STATIC_LISTENER_QOS, StaticTfBroadcaster, transform_stamped

    node, executor = ros_node
    broadcaster = StaticTfBroadcaster(node)
    broadcaster.send(transform_stamped('world', 'base', pose(10), ns_to_stamp(0)))
    broadcaster.send([transform_stamped('base', 'camera', pose(20), ns_to_stamp(0)),
                      transform_stamped('world', 'base', pose(30), ns_to_stamp(0))])  # replaces the first

    got = []
    node.create_subscription(TFMessage, '/tf_static', got.append, TF_STATIC_LISTENER_QOS)  # joins after publishing
    assert spin_until(executor, lambda: got, 5)
    spin_until(executor, lambda: False, 0.2)
    assert len(got) == 1  # depth 1: only the last message is latched, and it holds everything
    by_child = {t.child_frame_id: t for t in got[0].transforms}
    assert set(by_child) == {'base', 'camera'}
    assert by_child['base'].header.frame_id == 'world'
    assert by_child['base'].transform.rotation.z == pytest.approx(np.sin(np.radians(15)))


def test_listener_fills_a_tree_from_broadcasters(ros_node):
    import rclpy

    from kp_pose_ros.ros.stamps import ns_to_stamp
    from kp_pose_ros.ros.tf import StaticTfBroadcaster, TfBroadcaster, TfListener, transform_stamped

    node, executor = ros_node
    # Broadcasters in a namespaced node still use the absolute /tf and /tf_static, as tf2_ros does.
    other = rclpy.create_node('robot_driver', namespace='robot1', context=node.context)
    executor.add_node(other)
    StaticTfBroadcaster(other).send(transform_stamped('base', 'camera', pose(0, (0, 0, 1)), ns_to_stamp(0)))
    dynamic = TfBroadcaster(other)
    assert other.count_publishers('/tf') == 1 and other.count_publishers('/tf_static') == 1

    tree = TransformTree()
    TfListener(node, tree)
    bad = transform_stamped('base', 'broken', np.eye(4), ns_to_stamp(S))
    bad.transform.rotation.w = 2.0  # logged and skipped; the good transform in the same message still lands

    def publish_and_check():
        dynamic.send([bad, transform_stamped('world', 'base', pose(90, (1, 0, 0)), ns_to_stamp(S))])
        return tree.can_transform('world', 'camera')

    assert spin_until(executor, publish_and_check, 5)
    np.testing.assert_allclose(tree.lookup('world', 'camera'), pose(90, (1, 0, 0)) @ pose(0, (0, 0, 1)), atol=1e-9)
    assert 'broken' not in tree.frames()
    executor.remove_node(other)
    other.destroy_node()
