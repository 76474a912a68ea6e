"""The calibration manager over real rclpy: /tf stamps never repeat, compute refuses views that cannot bound the
error and says what to capture, and drift of the live estimate from a loaded calibration shows on /diagnostics."""
import numpy as np
from conftest import call_service, spin_until
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.transforms import invert_transform, make_transform
from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec
from kp_pose_ros.robot.calibration import CalibrationSample, aggregate
from kp_pose_ros.robot.calibration_store import save_calibration
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS
from kp_pose_ros.ros.poses import pose_from_matrix

MANAGER = 'kp_pose_ros.nodes.calibration_manager:CalibrationManagerNode'
NS = '/robot_calib/calibration_manager'
JOINTS = [f'panda_joint{i}' for i in range(1, 8)]
T_BASE_OPTICAL = make_transform(Rotation.from_euler('xyz', [-110, 5, 95], degrees=True).as_matrix(), [1.3, -0.4, 0.9])
T_LINK_OPTICAL = make_transform(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]), [0.0, 0.015, 0.0])
READY = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def _estimate(T_base_optical, joints, stamp_ns):
    from kp_pose_msgs.msg import RobotCameraEstimate
    from kp_pose_ros.ros.stamps import ns_to_stamp

    msg = RobotCameraEstimate(camera_frame='camera_color_optical_frame', pose=pose_from_matrix(T_base_optical),
                              joint_names=JOINTS, joint_positions=[float(q) for q in joints], known_joints=True,
                              keypoint_names=list(PANDA_KEYPOINT_LINKS), residuals_px=[1.0] * 7, inliers=[True] * 7,
                              mean_residual_px=1.0)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = 'panda_link0'
    return msg


def _noisy(rng, T, sigma_t=0.001, sigma_deg=0.05):
    return T @ make_transform(Rotation.from_rotvec(rng.normal(0, np.radians(sigma_deg), 3)).as_matrix(),
                              rng.normal(0, sigma_t, 3))


class Harness:
    """The test node: the driver's static camera_link -> optical transform, an estimate publisher, and what the
    manager sends on /tf (camera_link) and /diagnostics."""

    def __init__(self, node, executor):
        from diagnostic_msgs.msg import DiagnosticArray
        from tf2_msgs.msg import TFMessage

        from kp_pose_msgs.msg import RobotCameraEstimate
        from kp_pose_ros.ros.tf import StaticTfBroadcaster, transform_stamped

        self.node, self.executor = node, executor
        StaticTfBroadcaster(node).send(transform_stamped('camera_link', 'camera_color_optical_frame',
                                                         T_LINK_OPTICAL, node.get_clock().now().to_msg()))
        self.tf_stamps, self.status = [], []
        node.create_subscription(TFMessage, '/tf', lambda m: self.tf_stamps.extend(
            t.header.stamp.sec * 10**9 + t.header.stamp.nanosec for t in m.transforms
            if t.child_frame_id == 'camera_link'), 100)
        node.create_subscription(DiagnosticArray, '/diagnostics', lambda m: self.status.extend(
            s for s in m.status if s.name == NS), 10)
        self.pub = node.create_publisher(RobotCameraEstimate, '/robot_calib/estimate', 100)
        self.stamp_ns = node.get_clock().now().nanoseconds

    def feed(self, poses_and_joints, period_s=0.01):
        """Publish estimates with stamps 10 ms apart, newer than any before; returns the stamps."""
        stamps = []
        for T, joints in poses_and_joints:
            self.stamp_ns += 10_000_000
            self.pub.publish(_estimate(T, joints, self.stamp_ns))
            stamps.append(self.stamp_ns)
            spin_until(self.executor, lambda: False, period_s)
        return stamps

    def spin(self, seconds, predicate=lambda: False):
        return spin_until(self.executor, predicate, seconds)


def _manager(tmp_path, **parameters):
    return NodeSpec(name='calibration_manager', namespace='/robot_calib', executable='calibration_manager',
                    node_class=MANAGER, parameters={'calibration_dir': str(tmp_path), 'min_samples': 5,
                                                    'publish_period_s': 0.05, **parameters})


def _views(rng, count):
    """`count` distinct arm configurations around the ready pose."""
    return [READY + rng.uniform(-0.6, 0.6, 7) for _ in range(count)]


def _save_reference(tmp_path, rng):
    """A calibration of T_BASE_OPTICAL from 12 views (a few millimetres of per-view bias), saved as 'cell' with its
    uncertainty, published to camera_link."""
    samples = []
    for joints in _views(rng, 12):
        view = _noisy(rng, T_BASE_OPTICAL, 0.002, 0.1)
        samples += [CalibrationSample(len(samples), _noisy(rng, view), joint_positions=joints) for _ in range(3)]
    result = aggregate(samples)
    save_calibration(tmp_path, 'cell', result.T_base_cam @ invert_transform(T_LINK_OPTICAL), 'panda_link0',
                     'camera_link', result=result)
    return result


def test_tf_stamps_strictly_increase(ros_node, tmp_path):
    """Live, an estimate arriving late with an old stamp, then a loaded calibration and back to live: every
    base -> camera_link transform on /tf is newer than the one before (tf2 warns TF_REPEATED_DATA and drops a
    repeated stamp)."""
    from kp_pose_msgs.srv import LoadCalibration, ResetCalibration

    node, executor = ros_node
    rng = np.random.default_rng(0)
    h = Harness(node, executor)
    _save_reference(tmp_path, rng)
    with GraphRun([_manager(tmp_path)], context=node.context) as run:
        executor.add_node(run.nodes[0])
        stamps = h.feed([(_noisy(rng, T_BASE_OPTICAL), READY) for _ in range(8)], period_s=0.03)
        assert h.spin(5.0, lambda: h.tf_stamps[-1:] == [max(stamps)])  # stamped with the newest estimate
        live_sent = len(h.tf_stamps)
        h.pub.publish(_estimate(T_BASE_OPTICAL, READY, h.tf_stamps[0]))  # one already sent, delivered again
        h.spin(0.5)
        assert len(h.tf_stamps) == live_sent
        assert call_service(node, executor, LoadCalibration, f'{NS}/load', name='cell').success
        h.spin(1.0)
        assert len(h.tf_stamps) >= live_sent + 10  # the fixed calibration, every period
        assert call_service(node, executor, ResetCalibration, f'{NS}/reset').success
        h.stamp_ns = node.get_clock().now().nanoseconds
        h.feed([(_noisy(rng, T_BASE_OPTICAL), READY) for _ in range(8)], period_s=0.03)
        h.spin(0.5)
        executor.remove_node(run.nodes[0])
    stamps = np.array(h.tf_stamps)
    assert np.all(np.diff(stamps) > 0), f'{np.count_nonzero(np.diff(stamps) <= 0)} stamps not newer than the last'
    assert stamps[-1] > h.stamp_ns - 10**9  # the live transform is back after reset


def test_compute_needs_distinct_views_and_says_what_to_capture(ros_node, tmp_path):
    """30 frames of one arm pose, 4 cm off: consistent to a millimetre, so the spread gate passed them; the view
    count refuses them and names what to capture, with a pose within the robot description's joint limits.
    Thirty distinct poses with small independent biases calibrate."""
    import os

    import pybullet_data
    from std_msgs.msg import String

    from kp_pose_msgs.srv import ComputeCalibration
    from kp_pose_ros.ros.qos import LATCHED_QOS

    node, executor = ros_node
    rng = np.random.default_rng(1)
    h = Harness(node, executor)
    with open(os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf'), encoding='utf-8') as f:
        node.create_publisher(String, '/robot_description', LATCHED_QOS).publish(String(data=f.read()))
    with GraphRun([_manager(tmp_path)], context=node.context) as run:
        executor.add_node(run.nodes[0])
        biased = T_BASE_OPTICAL @ make_transform(np.eye(3), [0.04, 0.0, 0.0])
        h.feed([(_noisy(rng, biased), READY) for _ in range(30)])
        h.spin(0.3)
        res = call_service(node, executor, ComputeCalibration, f'{NS}/compute')
        assert not res.success and res.translation_std_m < 0.005, res.message
        assert 'unbounded (one arm configuration)' in res.message
        assert 'capture at least 5 more distinct arm configurations' in res.message
        assert 'a pose far from those captured: [' in res.message
        status = run.nodes[0].diagnostics.status()
        values = {kv.key: kv.value for kv in status.values}
        assert values['capture_configurations'] == '1' and 'more distinct' in values['capture_advice']
        assert values['live_configurations'] == '1' and values['live_uncertainty_cm'] == 'inf'

        h.feed([(_noisy(rng, _noisy(rng, T_BASE_OPTICAL, 0.003, 0.2)), joints) for joints in _views(rng, 30)])
        h.spin(0.3)
        res = call_service(node, executor, ComputeCalibration, f'{NS}/compute')
        executor.remove_node(run.nodes[0])
    assert res.success, res.message
    assert '30 arm configurations' in res.message and 'diverse enough' in res.message


def _latest_status(h):
    from kp_pose_ros.ros.diagnostics import level_of

    if not h.status or 'drift_cm' not in {kv.key for kv in h.status[-1].values}:
        return None, {}
    return level_of(h.status[-1].level), {kv.key: kv.value for kv in h.status[-1].values}


def test_drift_from_a_loaded_calibration_on_diagnostics(ros_node, tmp_path):
    """A loaded calibration and live estimates that agree with it: OK. The camera bumped by 3 cm: ERROR, with the
    drift and its tolerance in the values."""
    from kp_pose_msgs.srv import LoadCalibration
    from kp_pose_ros.ros.diagnostics import ERROR, OK

    node, executor = ros_node
    rng = np.random.default_rng(2)
    h = Harness(node, executor)
    _save_reference(tmp_path, rng)
    with GraphRun([_manager(tmp_path)], context=node.context) as run:
        executor.add_node(run.nodes[0])
        assert call_service(node, executor, LoadCalibration, f'{NS}/load', name='cell').success
        h.feed([(_noisy(rng, T_BASE_OPTICAL), READY) for _ in range(30)])
        assert h.spin(5.0, lambda: _latest_status(h)[0] is not None)
        level, values = _latest_status(h)
        assert level == OK and float(values['drift_cm']) < 0.5, values
        assert 0.5 <= float(values['drift_tolerance_cm']) < 1.5 and values['calibration'].startswith('fixed')

        bumped = make_transform(np.eye(3), [0.03, 0.0, 0.0]) @ T_BASE_OPTICAL
        h.feed([(_noisy(rng, bumped), READY) for _ in range(30)])
        h.status.clear()
        assert h.spin(5.0, lambda: _latest_status(h)[0] == ERROR)
        level, values = _latest_status(h)
        executor.remove_node(run.nodes[0])
    assert 2.8 < float(values['drift_cm']) < 3.2 and float(values['drift_ratio']) > 2.0
    assert 'the camera has moved' in h.status[-1].message
