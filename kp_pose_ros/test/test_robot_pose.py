"""Camera-to-robot pose from keypoints: exact recovery on noiseless data in both modes, robustness to outliers and
missing keypoints, and the reprojection refinement reducing error under detector-like noise."""
import os

import numpy as np
import pybullet_data
import pytest

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import invert_transform, rotation_error_deg, transform_points
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS, RobotKinematics
from kp_pose_ros.robot.pose import fit_known_joints, fit_unknown_joints, refine_on_reprojection, reprojection_residuals
from kp_pose_ros.robot.urdf import load_urdf

CAMERA = CameraModel.from_fov(640, 480, 70.0)


@pytest.fixture(scope='module')
def kin():
    urdf = load_urdf(os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf'))
    return RobotKinematics(urdf, 'panda_link0', PANDA_KEYPOINT_LINKS)


def _scene(kin, rng):
    """A random arm pose seen by a camera 1.2-1.8 m away looking at the arm's middle."""
    q = kin.sample_joints(rng, 1, margin=0.1)[0]
    target = np.array([0.0, 0.0, 0.4]) + rng.normal(0, 0.05, 3)
    az, el, dist = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 0.8), rng.uniform(1.2, 1.8)
    eye = target + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    T_base_cam[:3, 3] = eye
    T_cam_base = invert_transform(T_base_cam)
    points_cam = transform_points(T_cam_base, kin.keypoints(q))
    return q, T_cam_base, points_cam, CAMERA.project(points_cam)


def _errors(T_est, T_true):
    return np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]), rotation_error_deg(T_est[:3, :3], T_true[:3, :3])


def test_exact_recovery_noiseless(kin):
    rng = np.random.default_rng(0)
    for _ in range(10):
        q, T, points_cam, px = _scene(kin, rng)
        for est in (fit_unknown_joints(points_cam, q, px, CAMERA, kin), fit_known_joints(q, px, CAMERA, kin)):
            assert est.success, est.message
            dt, dr = _errors(est.T_cam_base, T)
            assert dt < 1e-6 and dr < 1e-4
            assert np.nanmax(est.residuals_px) < 1e-3
            np.testing.assert_allclose(est.T_base_cam @ est.T_cam_base, np.eye(4), atol=1e-9)


def test_outliers_and_missing_keypoints(kin):
    rng = np.random.default_rng(1)
    for _ in range(10):
        q, T, points_cam, px = _scene(kin, rng)
        bad_3d, bad_2d = points_cam.copy(), px.copy()
        bad_3d[2] += [0.3, -0.2, 0.1]          # one lifted keypoint far off
        bad_3d[5] = np.nan                     # one missing
        bad_2d[3] += [80.0, -60.0]             # one 2D outlier
        bad_2d[6] = np.nan                     # one not detected
        unknown = fit_unknown_joints(bad_3d, q, bad_2d, CAMERA, kin)
        known = fit_known_joints(q, bad_2d, CAMERA, kin)
        for est, outlier in ((unknown, 2), (known, 3)):
            assert est.success
            dt, dr = _errors(est.T_cam_base, T)
            assert dt < 1e-4 and dr < 0.01
            assert not est.inliers[outlier]
        assert np.isnan(known.residuals_px[6]) and known.residuals_px[3] > 50


def test_known_joints_falls_back_to_3d_when_2d_is_too_sparse(kin):
    q, T, points_cam, px = _scene(kin, np.random.default_rng(2))
    sparse = px.copy()
    sparse[3:] = np.nan
    assert not fit_known_joints(q, sparse, CAMERA, kin).success
    est = fit_known_joints(q, sparse, CAMERA, kin, points_cam=points_cam)
    assert est.success and 'used the 3D-3D fit' in est.message and est.known_joints
    assert _errors(est.T_cam_base, T)[0] < 1e-6


def test_refinement_uses_the_2d_evidence(kin):
    """Lifted 3D with centimetre errors and slightly wrong joints; 2D with 1.5 px noise. Refining pose and joints on
    the reprojection error must, on average, bring the pose closer than the 3D-3D fit alone."""
    rng = np.random.default_rng(3)
    before, after = [], []
    for _ in range(25):
        q, T, points_cam, px = _scene(kin, rng)
        lifted = points_cam + rng.normal(0, 0.02, points_cam.shape)
        q_reg = q + rng.normal(0, 0.05, q.shape)
        noisy_px = px + rng.normal(0, 1.5, px.shape)
        est = fit_unknown_joints(lifted, q_reg, noisy_px, CAMERA, kin)
        refined = refine_on_reprojection(est, noisy_px, CAMERA, kin, refine_joints=True, points_cam=lifted)
        before.append(_errors(est.T_cam_base, T)[0])
        after.append(_errors(refined.T_cam_base, T)[0])
        assert np.nanmedian(refined.residuals_px) <= np.nanmedian(est.residuals_px) + 1e-9
    assert np.mean(after) < 0.7 * np.mean(before), (np.mean(before), np.mean(after))


def test_reprojection_residuals_nan_for_missing(kin):
    q, T, _, px = _scene(kin, np.random.default_rng(4))
    px = px.copy()
    px[1] = np.nan
    r = reprojection_residuals(T, kin.keypoints(q), px, CAMERA)
    assert np.isnan(r[1]) and np.nanmax(r) < 1e-6


def test_failure_is_a_result_not_an_exception(kin):
    q, _, points_cam, px = _scene(kin, np.random.default_rng(5))
    empty = np.full_like(points_cam, np.nan)
    est = fit_unknown_joints(empty, q, px, CAMERA, kin)
    assert not est.success and '3D-3D fit failed' in est.message
    assert refine_on_reprojection(est, px, CAMERA, kin) is est


def test_static_camera_window_beats_single_frames(kin):
    """One camera, 30 arm poses, 6 px detector noise and a few gross outliers: PnP over the whole window must land
    far closer to the truth than the typical single-frame PnP, and report the current frame."""
    from kp_pose_ros.robot.pose import fit_known_joints_window, window_entry

    rng = np.random.default_rng(7)
    q0, T, _, _ = _scene(kin, rng)
    window, single = [], []
    for _ in range(30):
        q = kin.sample_joints(rng, 1, margin=0.1)[0]
        px = CAMERA.project(transform_points(T, kin.keypoints(q))) + rng.normal(0, 6.0, (7, 2))
        px[rng.random(7) < 0.05] += 150.0
        window.append(window_entry(q, px, CAMERA, kin))
        est = fit_known_joints(q, px, CAMERA, kin)
        single.append(_errors(est.T_cam_base, T)[0] if est.success else np.inf)
    est = fit_known_joints_window(window, q, px, CAMERA, kin)
    assert est.success and est.known_joints and '30 frames' in est.message
    dt, dr = _errors(est.T_cam_base, T)
    assert dt < 0.02 and dr < 1.0, (dt, dr)
    assert dt < 0.5 * np.median(single)
    np.testing.assert_allclose(est.joints, q)
