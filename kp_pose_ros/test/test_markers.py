"""Message builders: RViz markers (types, point counts, NaN skipping, lifetimes) and joint states."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from scipy.spatial.transform import Rotation
from visualization_msgs.msg import Marker, MarkerArray

from kp_pose_ros.core.transforms import make_transform
from kp_pose_ros.ros.joint_states import joint_positions, joint_state
from kp_pose_ros.ros.markers import (
    axes_marker,
    box_marker,
    delete_all_marker,
    keypoint_markers,
    marker_array,
    skeleton_marker,
)

STAMP = Time(sec=3, nanosec=7)
NAN = [np.nan, np.nan, np.nan]


def xyz(points):
    return np.array([[p.x, p.y, p.z] for p in points])


def test_keypoints_skip_nan_and_label_valid_points():
    pts = [[0, 0, 1], NAN, [0.1, 0.2, 1.5], [0.3, np.nan, 1.0]]
    markers = keypoint_markers(pts, 'camera_optical', STAMP, ns='robot', marker_id=4, rgba=(1, 0, 0, 1), scale=0.03,
                               names=['base', 'shoulder', 'elbow', 'wrist'])
    spheres, labels = markers[0], markers[1:]
    assert spheres.type == Marker.SPHERE_LIST and spheres.action == Marker.ADD
    assert (spheres.ns, spheres.id, spheres.header.frame_id) == ('robot', 4, 'camera_optical')
    np.testing.assert_allclose(xyz(spheres.points), [[0, 0, 1], [0.1, 0.2, 1.5]])
    assert spheres.scale.x == spheres.scale.y == spheres.scale.z == pytest.approx(0.03)
    assert (spheres.color.r, spheres.color.g, spheres.color.a) == (1.0, 0.0, 1.0)
    assert (spheres.lifetime.sec, spheres.lifetime.nanosec) == (0, 500_000_000) and not spheres.frame_locked
    assert [m.type for m in labels] == [Marker.TEXT_VIEW_FACING] * 2
    assert [(m.text, m.id, m.ns) for m in labels] == [('base', 0, 'robot/4/labels'), ('elbow', 2, 'robot/4/labels')]
    assert labels[1].pose.position.z == pytest.approx(1.5)
    assert len(keypoint_markers(pts, 'cam', STAMP)) == 1  # no names, no labels


def test_all_missing_keypoints_delete_the_stale_marker():
    [m] = keypoint_markers([NAN, NAN], 'cam', STAMP, ns='kp', marker_id=2)
    assert m.action == Marker.DELETE and (m.ns, m.id) == ('kp', 2) and len(m.points) == 0


def test_skeleton_skips_edges_touching_missing_points():
    pts = [[0, 0, 0], [1, 0, 0], NAN, [1, 1, 0]]
    m = skeleton_marker(pts, [(0, 1), (1, 2), (2, 3), (1, 3)], 'base', STAMP, width=0.01)
    assert m.type == Marker.LINE_LIST and m.scale.x == pytest.approx(0.01)
    np.testing.assert_allclose(xyz(m.points), [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]])
    with pytest.raises(ValueError, match=r'edge \(0, 9\)'):
        skeleton_marker(pts, [(0, 9)], 'base', STAMP)
    assert skeleton_marker(pts, [(1, 2)], 'base', STAMP).action == Marker.DELETE


def test_axes_have_per_vertex_colours_and_the_pose():
    T = make_transform(Rotation.from_euler('z', 90, degrees=True).as_matrix(), [1, 2, 3])
    m = axes_marker(T, 'world', STAMP, length=0.2, lifetime_s=0.0)
    assert m.type == Marker.LINE_LIST and len(m.points) == 6 and len(m.colors) == 6
    np.testing.assert_allclose(xyz(m.points)[1::2], 0.2 * np.eye(3))
    np.testing.assert_allclose([[c.r, c.g, c.b] for c in m.colors[::2]], np.eye(3))
    assert (m.pose.position.x, m.pose.position.y, m.pose.position.z) == (1, 2, 3)
    assert m.pose.orientation.z == pytest.approx(np.sqrt(0.5)) and m.pose.orientation.w == pytest.approx(np.sqrt(0.5))
    assert (m.lifetime.sec, m.lifetime.nanosec) == (0, 0)


def test_box_has_twelve_edges_of_the_right_lengths():
    size = np.array([0.1, 0.2, 0.3])
    m = box_marker(np.eye(4), size, 'object', STAMP)
    pts = xyz(m.points)
    assert m.type == Marker.LINE_LIST and len(pts) == 24
    lengths = np.sort(np.linalg.norm(pts[0::2] - pts[1::2], axis=1))
    np.testing.assert_allclose(lengths, np.repeat(size, 4))
    np.testing.assert_allclose(np.abs(pts), np.broadcast_to(size / 2, pts.shape))
    assert len({tuple(p) for p in pts}) == 8  # every corner used


def test_delete_all_and_array_round_trip_through_serialization():
    d = delete_all_marker('world')
    assert d.action == Marker.DELETEALL and d.header.frame_id == 'world'
    array = marker_array([*keypoint_markers([[0, 0, 1]], 'cam', STAMP, names=['a']), d])
    again = deserialize_message(serialize_message(array), MarkerArray)
    assert [m.type for m in again.markers[:2]] == [Marker.SPHERE_LIST, Marker.TEXT_VIEW_FACING]
    assert [m.action for m in again.markers] == [Marker.ADD, Marker.ADD, Marker.DELETEALL]
    with pytest.raises(TypeError, match='flatten'):
        marker_array([keypoint_markers([[0, 0, 1]], 'cam', STAMP)])


@pytest.mark.parametrize('call, message', [
    (lambda: keypoint_markers([[0, 0]], 'cam', STAMP), r'\(N, 3\)'),
    (lambda: keypoint_markers([[0, 0, np.inf]], 'cam', STAMP), 'infinite'),
    (lambda: keypoint_markers([[0, 0, 1]], 'cam', STAMP, names=['a', 'b']), '2 names for 1 points'),
    (lambda: keypoint_markers([[0, 0, 1]], 'cam', STAMP, rgba=(1, 0, 0)), 'rgba'),
    (lambda: keypoint_markers([[0, 0, 1]], 'cam', STAMP, scale=0), 'scale'),
    (lambda: keypoint_markers([[0, 0, 1]], '', STAMP), 'frame'),
    (lambda: keypoint_markers([[0, 0, 1]], 'cam', STAMP, lifetime_s=-1), 'lifetime'),
    (lambda: box_marker(np.eye(4), [1, 1], 'o', STAMP), 'size'),
    (lambda: axes_marker(np.eye(3), 'o', STAMP), r'shape \(4, 4\)'),
])
def test_bad_marker_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_joint_state_round_trip_by_name():
    msg = joint_state(['j1', 'j2', 'j3'], [0.1, -0.2, 0.3], STAMP, velocities=[1, 2, 3])
    assert msg.header.stamp == STAMP and list(msg.velocity) == [1, 2, 3] and list(msg.effort) == []
    np.testing.assert_allclose(joint_positions(msg, ['j3', 'j1']), [0.3, 0.1])
    with pytest.raises(KeyError, match=r"lacks joints \['j4', 'j5'\]"):
        joint_positions(msg, ['j1', 'j4', 'j5'])
    with pytest.raises(ValueError, match='one value per joint'):
        joint_state(['j1', 'j2'], [0.1], STAMP)
    with pytest.raises(ValueError, match='efforts'):
        joint_state(['j1'], [0.1], STAMP, efforts=[1, 2])
    with pytest.raises(ValueError, match='NaN'):
        joint_state(['j1'], [np.nan], STAMP)
    with pytest.raises(ValueError, match='unique'):
        joint_state(['j1', 'j1'], [0, 0], STAMP)
    msg.position = [0.0]
    with pytest.raises(ValueError, match='3 names but 1 positions'):
        joint_positions(msg, ['j1'])
