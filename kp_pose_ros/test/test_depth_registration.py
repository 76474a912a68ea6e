"""Depth registration without keypoints: the robot found at its measured joints in rendered RealSense-like depth by
RobotDepthFitter with no keypoint at all (registration hypotheses, then its ICP)."""

import numpy as np
import pytest

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import invert_transform, rotation_error_deg
from kp_pose_ros.robot.depth_alignment import depth_view
from kp_pose_ros.robot.depth_fit import RobotDepthFitter
from kp_pose_ros.robot.depth_registration import registration_hypotheses
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS
from kp_pose_ros.sim.camera_presets import camera_from_fov
from kp_pose_ros.sim.scene import SceneConfig, SimScene

# (scene seed, frame of that scene, horizontal FOV): three cameras, three lenses, the arm at 3-10 % of the image.
FRAMES = ((6003, 1, 80.0), (6006, 0, 70.21), (6008, 1, 93.0))


@pytest.fixture(scope='module')
def frames():
    rendered = []
    for seed, index, fov in FRAMES:
        config = SceneConfig(camera=camera_from_fov(640, 480, fov), num_distractors=3, distance_range_m=(0.8, 1.8),
                             depth_sensor='realsense_d435')
        with SimScene(config, seed=seed) as scene:
            for _ in range(index + 1):
                scene.randomize_camera()
                scene.set_joint_positions(scene.sample_joint_positions())
                frame = scene.render()
        rendered.append(frame)
    return rendered


@pytest.mark.parametrize('which', range(len(FRAMES)))
def test_depth_alone_finds_the_camera(panda, frames, which):
    kin, surface = panda
    frame = frames[which]
    view = depth_view(frame.depth_m, frame.camera)
    points, normals = surface.in_base(kin.link_poses(frame.joint_positions))
    hypotheses = registration_hypotheses(view, points, normals, frame.camera)
    assert hypotheses.shape[1:] == (4, 4) and 0 < len(hypotheses) <= 200
    # What runs: the fitter with the keypoint detector off (no pixel, no candidate) falls back on the registration.
    no_keypoints = np.full((len(PANDA_KEYPOINT_LINKS), 2), np.nan)
    aligned = RobotDepthFitter(surface, kin).fit(frame.depth_m, frame.camera, frame.joint_positions, no_keypoints)
    assert aligned.success, aligned.message
    T = aligned.T_cam_base
    T_true = invert_transform(frame.T_base_cam)
    t_err = np.linalg.norm(invert_transform(T)[:3, 3] - frame.T_base_cam[:3, 3])
    r_err = rotation_error_deg(T[:3, :3], T_true[:3, :3])
    assert t_err < 0.01 and r_err < 1.0, (t_err, r_err)


def test_same_seed_same_hypotheses(panda, frames):
    kin, surface = panda
    frame = frames[0]
    view = depth_view(frame.depth_m, frame.camera)
    points, normals = surface.in_base(kin.link_poses(frame.joint_positions))
    first = registration_hypotheses(view, points, normals, frame.camera, max_hypotheses=20, seed=3)
    assert len(first) == 20
    assert np.array_equal(first, registration_hypotheses(view, points, normals, frame.camera, max_hypotheses=20,
                                                         seed=3))


def test_nothing_to_register_gives_no_hypotheses(panda):
    kin, surface = panda
    points, normals = surface.in_base(kin.link_poses(np.zeros(7)))
    camera = CameraModel.from_fov(640, 480, 70.0)
    empty = depth_view(np.full((480, 640), np.nan), camera)
    assert registration_hypotheses(empty, points, normals, camera).shape == (0, 4, 4)
    # A bare floor seen from 1.2 m above at 45 deg: a plane to stand on, but nothing standing on it.
    rows = np.arange(480)[:, None] - camera.K[1, 2]
    tilt = np.radians(45.0) + np.arctan(rows / camera.K[1, 1])
    floor = np.broadcast_to(1.2 / np.sin(tilt) * np.cos(np.arctan(rows / camera.K[1, 1])), (480, 640))
    assert registration_hypotheses(depth_view(floor, camera), points, normals, camera).shape == (0, 4, 4)
