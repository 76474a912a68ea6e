"""The whole robot_calib graph on the synthetic camera, exactly as `kp-pose run robot_calib camera:=sim` starts it,
with the committed models: the estimates must come from the depth alignment and put the robot's keypoints within
millimetres of the truth (ADD, as RoboKeyGen measures it), and the estimated joint states must be published.
(Whether the live calibration reaches TF depends on the spread of the estimates; the calibration manager's own tests
cover both outcomes.)"""
import os

import numpy as np
import pybullet_data
from conftest import spin_graph

from kp_pose_ros.core.transforms import invert_transform, transform_points
from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS, RobotKinematics
from kp_pose_ros.robot.urdf import load_urdf
from kp_pose_ros.ros.keypoint_msgs import instance_3d
from kp_pose_ros.ros.poses import matrix_from_pose
from kp_pose_ros.ros.stamps import stamp_to_ns

# Median keypoint ADD over the run. Known joints with the sim camera's aligned depth (noise like a D435's): the
# robot's surface is aligned with the depth, a few millimetres here (README, robot_calib benchmark).
MEDIAN_ADD_M = 0.02
# Share of the estimates that must come from the depth alignment (the first frames may come before it has locked on).
MIN_DEPTH_ALIGNED = 0.8


def test_robot_calib_graph_on_sim_camera(ros_node, tmp_path):
    from sensor_msgs.msg import JointState

    from kp_pose_msgs.msg import KeypointArray, RobotCameraEstimate

    node, executor = ros_node
    truth, estimates, joints = {}, [], []
    node.create_subscription(KeypointArray, '/sim/keypoints',
                             lambda m: truth.__setitem__(stamp_to_ns(m.header.stamp), m), 50)
    node.create_subscription(RobotCameraEstimate, '/robot_calib/estimate', estimates.append, 50)
    node.create_subscription(JointState, '/robot_calib/joint_states', joints.append, 50)
    specs = get_graph('robot_calib').nodes({'camera': 'sim', 'seed': '0', 'calibration_dir': str(tmp_path)})
    ok = spin_graph(node, executor, specs, lambda: len(estimates) >= 20, 120.0)
    assert ok, f'{len(estimates)} estimates'
    kin = RobotKinematics(load_urdf(os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')),
                          'panda_link0', PANDA_KEYPOINT_LINKS)
    add = []
    assert np.mean([e.depth_aligned for e in estimates]) >= MIN_DEPTH_ALIGNED
    for e in estimates:
        gt = truth.get(stamp_to_ns(e.header.stamp))
        if gt is None:
            continue
        assert e.known_joints and e.header.frame_id == 'panda_link0'
        predicted = transform_points(invert_transform(matrix_from_pose(e.pose)), kin.keypoints(e.joint_positions))
        true_points, _ = instance_3d(gt.instances[0], PANDA_KEYPOINT_LINKS)
        add.append(np.mean(np.linalg.norm(predicted - true_points, axis=1)))
    print(f'median ADD {np.median(add):.3f} m over {len(add)} frames')
    assert len(add) >= 10 and np.median(add) < MEDIAN_ADD_M, np.round(add, 3)
    assert joints and list(joints[-1].name) == [f'panda_joint{i}' for i in range(1, 8)]
