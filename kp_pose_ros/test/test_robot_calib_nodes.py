"""robot_calib nodes over real rclpy, independent of the learned models: the calibration manager's live TF,
services and static mode; pose fitting on ground-truth keypoints from the sim camera; bad input never crashes."""
import numpy as np
import pytest
from conftest import call_service, spin_graph, spin_until
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.transforms import invert_transform, make_transform, rotation_error_deg
from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS
from kp_pose_ros.ros.poses import matrix_from_pose, pose_from_matrix
from kp_pose_ros.ros.tf import transform_from_msg

MANAGER = 'kp_pose_ros.nodes.calibration_manager:CalibrationManagerNode'
T_BASE_OPTICAL = make_transform(Rotation.from_euler('xyz', [-110, 5, 95], degrees=True).as_matrix(), [1.3, -0.4, 0.9])
T_LINK_OPTICAL = make_transform(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]), [0.0, 0.015, 0.0])


def _estimate(node, T_base_optical, residual=1.0):
    from kp_pose_msgs.msg import RobotCameraEstimate

    msg = RobotCameraEstimate(camera_frame='camera_color_optical_frame', pose=pose_from_matrix(T_base_optical),
                              keypoint_names=list(PANDA_KEYPOINT_LINKS), residuals_px=[residual] * 7,
                              inliers=[True] * 7, mean_residual_px=residual)
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = 'panda_link0'
    return msg


def test_calibration_manager_live_services_and_static_mode(ros_node, tmp_path):
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from kp_pose_msgs.msg import RobotCameraEstimate
    from kp_pose_msgs.srv import ComputeCalibration, LoadCalibration, ResetCalibration, SaveCalibration
    from kp_pose_ros.ros.tf import StaticTfBroadcaster, transform_stamped

    node, executor = ros_node
    rng = np.random.default_rng(0)
    StaticTfBroadcaster(node).send(transform_stamped('camera_link', 'camera_color_optical_frame', T_LINK_OPTICAL,
                                                     node.get_clock().now().to_msg()))
    tf_msgs, live = [], []
    node.create_subscription(TFMessage, '/tf', tf_msgs.append, 100)
    node.create_subscription(TransformStamped, '/robot_calib/calibration_manager/live_calibration', live.append, 10)
    pub = node.create_publisher(RobotCameraEstimate, '/robot_calib/estimate', 10)
    spec = NodeSpec(name='calibration_manager', namespace='/robot_calib', executable='calibration_manager',
                    node_class=MANAGER, parameters={'calibration_dir': str(tmp_path), 'min_samples': 10,
                                                    'publish_period_s': 0.1})
    T_true_link = T_BASE_OPTICAL @ invert_transform(T_LINK_OPTICAL)
    with GraphRun([spec], context=node.context) as run:
        executor.add_node(run.nodes[0])
        for i in range(30):
            noise = make_transform(Rotation.from_rotvec(rng.normal(0, np.radians(0.5), 3)).as_matrix(),
                                   rng.normal(0, 0.005, 3))
            T = T_BASE_OPTICAL @ noise if i % 10 else T_BASE_OPTICAL @ make_transform(np.eye(3), [0.3, 0, 0])
            pub.publish(_estimate(node, T))
            spin_until(executor, lambda: False, 0.03)
        pub.publish(_estimate(node, T_BASE_OPTICAL, residual=500.0))  # rejected: residual too high
        assert spin_until(executor, lambda: len(live) > 0, 10.0)
        T_live = transform_from_msg(live[-1])
        assert (live[-1].header.frame_id, live[-1].child_frame_id) == ('panda_link0', 'camera_link')
        assert np.linalg.norm(T_live[:3, 3] - T_true_link[:3, 3]) < 0.01
        assert rotation_error_deg(T_live[:3, :3], T_true_link[:3, :3]) < 1.0
        assert any(t.child_frame_id == 'camera_link' for m in tf_msgs for t in m.transforms)
        # /diagnostics carries the calibration's health: the live spread and the age of the last estimate.
        from kp_pose_ros.ros.diagnostics import OK, level_of
        status = run.nodes[0].diagnostics.status()
        values = {kv.key: kv.value for kv in status.values}
        assert level_of(status.level) == OK, status.message
        assert float(values['spread_cm']) < 1.0 and float(values['last_estimate_age_s']) < 5.0
        assert values['in.estimate.rate_hz'] and values['state'] == 'active'

        ns = '/robot_calib/calibration_manager'
        res = call_service(node, executor, ComputeCalibration, f'{ns}/compute')
        assert res.success, res.message
        assert res.num_inliers == res.num_samples - 3  # the three 30 cm outliers
        assert res.translation_std_m < 0.02 and res.rotation_std_deg < 2.0
        assert call_service(node, executor, SaveCalibration, f'{ns}/save', name='bench cell').success is False
        saved = call_service(node, executor, SaveCalibration, f'{ns}/save', name='cell_a')
        assert saved.success and (tmp_path / 'cell_a.yaml').is_file()
        assert call_service(node, executor, ResetCalibration, f'{ns}/reset').success
        assert not call_service(node, executor, LoadCalibration, f'{ns}/load', name='missing').success
        loaded = call_service(node, executor, LoadCalibration, f'{ns}/load', name='cell_a')
        assert loaded.success
        np.testing.assert_allclose(transform_from_msg(loaded.transform), transform_from_msg(res.transform), atol=1e-9)
        executor.remove_node(run.nodes[0])

    static = []
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, '/tf_static', static.append, latched)
    graph = get_graph('calibration_publisher').nodes({'calibration_name': 'cell_a', 'calibration_dir': str(tmp_path)})
    with GraphRun(graph, context=node.context) as run:
        executor.add_node(run.nodes[0])
        found = lambda: [t for m in static for t in m.transforms if t.child_frame_id == 'camera_link']  # noqa: E731
        assert spin_until(executor, lambda: bool(found()), 10.0)
        np.testing.assert_allclose(transform_from_msg(found()[0]), transform_from_msg(res.transform), atol=1e-9)
        executor.remove_node(run.nodes[0])


def test_static_mode_with_missing_calibration_keeps_running(ros_context, tmp_path):
    spec = NodeSpec(name='calibration_publisher', executable='calibration_manager', node_class=MANAGER,
                    parameters={'mode': 'static', 'calibration_dir': str(tmp_path), 'calibration_name': 'nope'})
    with GraphRun([spec], context=ros_context) as run:
        run.spin_for(0.3)
        assert run.nodes[0].fixed is None


def _fitting_on_ground_truth(remappings=()):
    """The sim camera and a known-joints fitting node fed the simulator's exact keypoints (no learned model)."""
    return get_graph('sim_camera').nodes({'seed': '5'}) + [NodeSpec(
        name='robot_pose_fitting', namespace='/robot_calib', executable='robot_pose_fitting',
        node_class='kp_pose_ros.nodes.robot_pose_fitting:RobotPoseFittingNode',
        parameters={'joints_mode': 'known', 'keypoint_links': list(PANDA_KEYPOINT_LINKS),
                    'joints_model': ''},
        remappings=[('keypoints_3d', '/sim/keypoints'), ('camera_info', '/camera/camera/color/camera_info'),
                    *remappings])]


def test_pose_fitting_on_ground_truth_keypoints(ros_node):
    """Sim camera ground truth (exact 2D and 3D keypoints) through the fitting node in known-joints mode: the
    estimate must match the true camera pose."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState

    from kp_pose_msgs.msg import RobotCameraEstimate

    node, executor = ros_node
    estimates, truth, joints_out = [], {}, []
    node.create_subscription(RobotCameraEstimate, '/robot_calib/estimate', estimates.append, 10)
    node.create_subscription(PoseStamped, '/sim/camera_pose',
                             lambda m: truth.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), m), 10)
    node.create_subscription(JointState, '/robot_calib/joint_states', joints_out.append, 10)
    specs = _fitting_on_ground_truth()
    assert spin_graph(node, executor, specs, lambda: len(estimates) >= 3, 40.0), 'no estimates'
    matched = 0
    for est in estimates:
        key = (est.header.stamp.sec, est.header.stamp.nanosec)
        if key not in truth:
            continue
        T_est, T_true = matrix_from_pose(est.pose), matrix_from_pose(truth[key].pose)
        assert np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]) < 2e-3
        assert rotation_error_deg(T_est[:3, :3], T_true[:3, :3]) < 0.2
        assert est.known_joints and est.mean_residual_px < 0.5
        matched += 1
    assert matched >= 1
    assert joints_out and list(joints_out[0].name) == [f'panda_joint{i}' for i in range(1, 8)]


@pytest.mark.parametrize('depth_topic, aligned', [('/camera/camera/aligned_depth_to_color/image_raw', True),
                                                   ('/camera/camera/color/image_raw', False)])
def test_pose_fitting_depth_alignment_and_bad_depth(ros_node, depth_topic, aligned):
    """Known joints with the aligned depth: the estimates come from the depth alignment. With a colour image on the
    depth topic (wrong encoding) the node logs it, keeps running and falls back on the keypoints."""
    from kp_pose_msgs.msg import RobotCameraEstimate

    node, executor = ros_node
    estimates = []
    node.create_subscription(RobotCameraEstimate, '/robot_calib/estimate', estimates.append, 10)
    specs = _fitting_on_ground_truth([('depth', depth_topic)])
    assert spin_graph(node, executor, specs, lambda: len(estimates) >= 4, 40.0), 'no estimates'
    flags = [e.depth_aligned for e in estimates]
    if aligned:
        assert sum(flags) >= 3, flags
        done = [e for e in estimates if e.depth_aligned]
        assert all(e.depth_coverage > 0.5 and 0 < e.depth_rms_m < 0.01 for e in done)
    else:
        assert not any(flags) and all(np.isnan(e.depth_rms_m) for e in estimates)


def test_calibration_manager_refuses_scattered_estimates(ros_node, tmp_path):
    """Estimates scattered by ~30 cm / 20 deg (a detector failing on this view) must not become a TF."""
    from geometry_msgs.msg import TransformStamped

    from kp_pose_msgs.msg import RobotCameraEstimate
    from kp_pose_msgs.srv import ComputeCalibration
    from kp_pose_ros.ros.tf import StaticTfBroadcaster, transform_stamped

    node, executor = ros_node
    rng = np.random.default_rng(1)
    StaticTfBroadcaster(node).send(transform_stamped('camera_link', 'camera_color_optical_frame', T_LINK_OPTICAL,
                                                     node.get_clock().now().to_msg()))
    live = []
    node.create_subscription(TransformStamped, '/robot_calib/calibration_manager/live_calibration', live.append, 10)
    pub = node.create_publisher(RobotCameraEstimate, '/robot_calib/estimate', 10)
    spec = NodeSpec(name='calibration_manager', namespace='/robot_calib', executable='calibration_manager',
                    node_class=MANAGER, parameters={'calibration_dir': str(tmp_path), 'publish_period_s': 0.1})
    with GraphRun([spec], context=node.context) as run:
        executor.add_node(run.nodes[0])
        for _ in range(30):
            scatter = make_transform(Rotation.from_rotvec(rng.normal(0, np.radians(20), 3)).as_matrix(),
                                     rng.normal(0, 0.3, 3))
            pub.publish(_estimate(node, T_BASE_OPTICAL @ scatter))
            spin_until(executor, lambda: False, 0.03)
        spin_until(executor, lambda: False, 0.5)
        res = call_service(node, executor, ComputeCalibration, '/robot_calib/calibration_manager/compute')
        executor.remove_node(run.nodes[0])
    assert not res.success and 'disagree too much' in res.message and res.translation_std_m > 0.05
    assert live == []


def test_live_transform_is_sent_once_per_estimate_stamp(ros_node, tmp_path):
    """The live base -> camera_link transform goes on /tf only when a newer estimate came: tf2 listeners warn about
    (and drop) a dynamic transform republished with the same stamp."""
    from tf2_msgs.msg import TFMessage

    from kp_pose_msgs.msg import RobotCameraEstimate
    from kp_pose_ros.ros.tf import StaticTfBroadcaster, transform_stamped

    node, executor = ros_node
    StaticTfBroadcaster(node).send(transform_stamped('camera_link', 'camera_color_optical_frame', T_LINK_OPTICAL,
                                                     node.get_clock().now().to_msg()))
    sent = []
    node.create_subscription(TFMessage, '/tf', lambda m: sent.extend(
        (t.header.stamp.sec, t.header.stamp.nanosec) for t in m.transforms if t.child_frame_id == 'camera_link'), 100)
    pub = node.create_publisher(RobotCameraEstimate, '/robot_calib/estimate', 10)
    spec = NodeSpec(name='calibration_manager', namespace='/robot_calib', executable='calibration_manager',
                    node_class=MANAGER, parameters={'calibration_dir': str(tmp_path), 'min_samples': 5,
                                                    'publish_period_s': 0.05})
    with GraphRun([spec], context=node.context) as run:
        executor.add_node(run.nodes[0])
        for _ in range(6):
            pub.publish(_estimate(node, T_BASE_OPTICAL))
            spin_until(executor, lambda: False, 0.03)
        assert spin_until(executor, lambda: len(sent) > 0, 10.0)
        spin_until(executor, lambda: False, 1.0)  # 20 publish periods without a new estimate
        executor.remove_node(run.nodes[0])
    assert len(sent) == len(set(sent)), f'{len(sent) - len(set(sent))} repeated stamps on /tf'


def test_joint_states_of_a_1khz_arm_are_kept_long_enough_to_pair(ros_context):
    """A 1 kHz /joint_states stream: the joint state of an image 0.3 s old is still there when its keypoints reach
    the fit (a 100-message history kept 0.1 s, and such frames fell back to regressed joints silently)."""
    import os

    import pybullet_data

    from kp_pose_ros.ros.joint_states import joint_state
    from kp_pose_ros.ros.stamps import ns_to_stamp

    urdf = os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')
    spec = NodeSpec(name='robot_pose_fitting', namespace='/robot_calib', executable='robot_pose_fitting',
                    node_class='kp_pose_ros.nodes.robot_pose_fitting:RobotPoseFittingNode',
                    parameters={'joints_model': '', 'keypoint_links': list(PANDA_KEYPOINT_LINKS), 'urdf_path': urdf,
                                'depth_alignment': False})
    with GraphRun([spec], context=ros_context) as run:
        fitting = run.nodes[0]
        assert fitting.state == 'active'
        names = fitting.kinematics.joint_names
        t0 = 1_700_000_000 * 10**9
        for i in range(2500):  # 2.5 s at 1 kHz
            fitting._on_joint_state(joint_state(names, np.full(len(names), i * 1e-3), ns_to_stamp(t0 + i * 10**6)))
        image_stamp = t0 + 2200 * 10**6  # 0.3 s before the newest joint state
        np.testing.assert_allclose(fitting._measured_joints(image_stamp), 2.2)
        assert fitting._measured_joints(t0 + 100 * 10**6) is None  # older than the 2 s kept
        assert len(fitting.joint_history) <= 2001


@pytest.mark.parametrize('model', ['robot_lifter_regression_panda.onnx', 'robot_lifter_nonccs_panda.onnx'])
def test_lifter_node_feeds_each_model_the_2d_space_it_was_trained_on(ros_node, model):
    """The regression baseline could not load and the no-NCCS ablation was fed NCCS (wrong skeletons, silently):
    the node's output must equal the model's own lift of the pixels in the model's space."""
    from sensor_msgs.msg import CameraInfo

    from kp_pose_msgs.msg import KeypointArray, KeypointInstance
    from kp_pose_ros.core.camera import CameraModel
    from kp_pose_ros.paths import model_file
    from kp_pose_ros.robot.lifting import load_lifter
    from kp_pose_ros.ros.keypoint_msgs import instance_3d, keypoints_2d

    node, executor = ros_node
    camera = CameraModel.from_fov(640, 480, 70.0)
    px = np.array([[320, 400], [322, 330], [330, 260], [360, 210], [380, 230], [395, 250], [400, 262.0]])
    info = CameraInfo(width=640, height=480, k=camera.K.ravel().tolist(), d=[0.0] * 5, distortion_model='plumb_bob')
    info.header.frame_id = 'cam'
    msg = KeypointArray(instances=[KeypointInstance(keypoints_2d=keypoints_2d(PANDA_KEYPOINT_LINKS, px,
                                                                               np.ones(7)))])
    msg.header.frame_id = 'cam'
    out = []
    node.create_subscription(KeypointArray, '/robot_calib/keypoints_3d', out.append, 10)
    pub_info = node.create_publisher(CameraInfo, '/camera_info', 10)
    pub_kp = node.create_publisher(KeypointArray, '/robot_calib/keypoints_2d', 10)
    spec = NodeSpec(name='robot_lifter', namespace='/robot_calib', executable='robot_lifter',
                    node_class='kp_pose_ros.nodes.robot_lifter:RobotLifterNode',
                    parameters={'model': model, 'providers': 'cpu', 'num_candidates': 2},
                    remappings=[('camera_info', '/camera_info')])
    with GraphRun([spec], context=node.context) as run:
        executor.add_node(run.nodes[0])
        assert run.nodes[0].state == 'active'

        def publish_until_lifted():
            msg.header.stamp = info.header.stamp = node.get_clock().now().to_msg()
            pub_info.publish(info)
            pub_kp.publish(msg)
            return spin_until(executor, lambda: len(out) > 0, 0.3)
        assert spin_until(executor, publish_until_lifted, 20.0), 'no 3D keypoints'
        executor.remove_node(run.nodes[0])
    points, _ = instance_3d(out[0].instances[0], PANDA_KEYPOINT_LINKS)
    lifter = load_lifter(model_file(model), providers='cpu', num_candidates=2)
    expected = lifter.lift(lifter.condition_of(px, camera), np.ones(7, bool)).points
    # The diffusion lifter samples: its candidates differ from one run to the next, by centimetres, not metres.
    assert np.linalg.norm(points - expected, axis=1).mean() < (1e-6 if 'regression' in model else 0.1)
