"""2D -> 3D lifting and joint regression with the committed ONNX models (robot.lifting), on held-out synthetic
keypoints from forward kinematics. Thresholds are the accuracy measured when the models were trained (see the
manifests' metrics), with margin."""
import os
import shutil

import numpy as np
import pytest
import yaml

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.onnx_model import ModelLoadError
from kp_pose_ros.paths import model_file
from kp_pose_ros.robot.kinematics import PANDA_BASE_LINK, PANDA_KEYPOINT_LINKS, RobotKinematics
from kp_pose_ros.robot.lifting import DiffusionLifter, JointRegressor, RegressionLifter
from kp_pose_ros.robot.urdf import load_urdf
from kp_pose_ros.training.robot_pairs import RobotPairGenerator

pybullet_data = pytest.importorskip('pybullet_data')

LIFTER = model_file('robot_lifter_panda.onnx')
REGRESSION = model_file('robot_lifter_regression_panda.onnx')
NONCCS = model_file('robot_lifter_nonccs_panda.onnx')
JOINTS = model_file('robot_joints_panda.onnx')
SAMPLES = 40


def pairwise(X):
    """Distances between every two keypoints: (B, N, N), unchanged by rigid motions."""
    return np.linalg.norm(X[:, :, None] - X[:, None], axis=-1)


def add(points, truth):
    """ADD (m): mean distance between estimated and true keypoints."""
    return np.linalg.norm(np.asarray(points) - truth, axis=-1).mean(axis=-1)


@pytest.fixture(scope='module')
def kinematics():
    urdf = os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')
    return RobotKinematics(load_urdf(urdf), PANDA_BASE_LINK, PANDA_KEYPOINT_LINKS)


@pytest.fixture(scope='module')
def lifter():
    return DiffusionLifter(LIFTER, providers='cpu', seed=0)


def held_out(kinematics, hfov_deg, width=640, height=480, frames=1, seed=4242):
    """Exact (uncorrupted) keypoints of random arms seen by a camera; seeds differ from every training seed."""
    camera = CameraModel.from_fov(width, height, hfov_deg)
    return RobotPairGenerator(kinematics, seed=seed).sample_sequences(SAMPLES, frames, camera=camera, corrupt=False)


@pytest.mark.parametrize('hfov_deg, width, height, limit_m', [(62.73, 640, 480, 0.09), (93.01, 1280, 720, 0.09)])
def test_lifts_exact_keypoints_at_unseen_fields_of_view(kinematics, lifter, hfov_deg, width, height, limit_m):
    batch = held_out(kinematics, hfov_deg, width, height)[0]
    errors = [add(lifter.lift(batch.nccs[i], batch.mask[i] > 0).points, batch.X_cam[i]) for i in range(SAMPLES)]
    assert np.mean(errors) < limit_m
    # Far better than knowing nothing: the mean training pose is off by about half a metre.
    prior = add(lifter.mean.reshape(-1, 3), batch.X_cam).mean()
    assert np.mean(errors) < prior / 4


def test_result_shapes_spread_and_determinism(kinematics, lifter):
    batch = held_out(kinematics, 70.21)[0]
    result = lifter.lift(batch.nccs[0], batch.mask[0] > 0)
    assert result.points.shape == (7, 3) and result.spread.shape == (7,)
    assert np.all(np.isfinite(result.points)) and np.all(result.spread >= 0) and np.any(result.spread > 0)
    assert result.observed.dtype == bool and result.observed.sum() == int(batch.mask[0].sum())
    a = DiffusionLifter(LIFTER, providers='cpu', seed=3).lift(batch.nccs[1], batch.mask[1] > 0)
    b = DiffusionLifter(LIFTER, providers='cpu', seed=3).lift(batch.nccs[1], batch.mask[1] > 0)
    c = DiffusionLifter(LIFTER, providers='cpu', seed=4).lift(batch.nccs[1], batch.mask[1] > 0)
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.array_equal(a.points, c.points)


def test_missing_and_nan_keypoints_still_lift(kinematics, lifter):
    batch = held_out(kinematics, 70.21)[0]
    errors = []
    for i in range(SAMPLES):
        nccs, valid = batch.nccs[i].copy(), batch.mask[i] > 0
        missing = np.flatnonzero(valid)[[1, 3]]
        valid[missing[0]] = False        # reported missing (low confidence)
        nccs[missing[1]] = np.nan        # NaN from upstream, even though flagged valid
        result = lifter.lift(nccs, valid)
        assert not result.observed[missing].any()
        assert np.all(np.isfinite(result.points))
        errors.append(add(result.points, batch.X_cam[i]))
    assert np.mean(errors) < 0.16


def test_too_few_keypoints_or_bad_shapes_are_refused(lifter):
    nccs = np.zeros((7, 2))
    with pytest.raises(ValueError, match='only 2 of 7 keypoints are valid'):
        lifter.lift(nccs, np.array([1, 1, 0, 0, 0, 0, 0], dtype=bool))
    with pytest.raises(ValueError, match='only 0 of 7'):
        lifter.lift(np.full((7, 2), np.nan), np.ones(7, dtype=bool))
    with pytest.raises(ValueError, match=r'shape \(7, 2\)'):
        lifter.lift(np.zeros((6, 2)), np.ones(6, dtype=bool))
    with pytest.raises(ValueError, match='valid must have shape'):
        lifter.lift(nccs, np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match='previous'):
        lifter.lift(nccs, np.ones(7, dtype=bool), previous=np.zeros((7, 2)))


def test_online_mode_uses_the_previous_estimate(kinematics, lifter):
    # Started from the previous frame's true keypoints, the online lift of the next frame stays near them and is
    # more accurate than lifting from noise.
    frames = held_out(kinematics, 70.21, frames=2)
    single, online, moved = [], [], []
    for i in range(SAMPLES):
        args = (frames[1].nccs[i], frames[1].mask[i] > 0)
        single.append(add(lifter.lift(*args).points, frames[1].X_cam[i]))
        points = lifter.lift(*args, previous=frames[0].X_cam[i]).points
        online.append(add(points, frames[1].X_cam[i]))
        moved.append(add(points, frames[0].X_cam[i]))
    assert np.mean(online) < np.mean(single)
    assert np.mean(moved) < 0.06


def test_regression_baseline_has_the_same_interface(kinematics):
    regression = RegressionLifter(REGRESSION, providers='cpu')
    batch = held_out(kinematics, 62.73)[0]
    results = [regression.lift(batch.nccs[i], batch.mask[i] > 0) for i in range(SAMPLES)]
    assert all(np.array_equal(r.spread, np.zeros(7)) for r in results)
    assert np.mean([add(r.points, batch.X_cam[i]) for i, r in enumerate(results)]) < 0.09


def test_no_nccs_ablation_only_works_at_its_training_camera(kinematics):
    # RoboKeyGen Table IV: conditioned on raw pixels, a lifter learns one camera's projection.
    nonccs = DiffusionLifter(NONCCS, providers='cpu', seed=0)
    assert nonccs.condition_space == 'pixels'
    own = held_out(kinematics, 70.21)[0]
    other = held_out(kinematics, 93.01, 1280, 720)[0]
    for batch, bound in ((own, lambda e: e < 0.15), (other, lambda e: e > 0.3)):
        errors = [add(nonccs.lift(batch.pixels[i], batch.mask[i] > 0).points, batch.X_cam[i]) for i in range(20)]
        assert bound(np.mean(errors)), np.mean(errors)


def test_joint_regressor_recovers_observable_joints(kinematics):
    regressor = JointRegressor(JOINTS, providers='cpu')
    assert regressor.joint_names == kinematics.joint_names
    batch = held_out(kinematics, 70.21)[0]
    q = np.array([regressor.predict(points) for points in batch.X_cam])
    assert np.all(q >= kinematics.lower) and np.all(q <= kinematics.upper)
    # Joints 4-6 are observable; joints 2 and 3 up to the shoulder symmetry (q1 + pi, -q2, q3 + pi), which places
    # every keypoint identically; joint 1 (base yaw) and 7 (hand roll) not at all.
    error = np.abs(np.angle(np.exp(1j * (q - batch.q))))
    assert np.all(np.degrees(error[:, 3:6].mean(axis=0)) < 4.0)
    assert np.degrees(np.abs(np.abs(q[:, 1]) - np.abs(batch.q[:, 1])).mean()) < 4.0
    assert np.degrees(np.abs(np.angle(np.exp(2j * (q[:, 2] - batch.q[:, 2])))).mean() / 2) < 5.0
    assert np.all(q[:, 1] <= 0.0)
    # So the forward kinematics of the estimate reproduce the skeleton up to a rigid motion.
    assert np.abs(pairwise(kinematics.keypoints(q)) - pairwise(kinematics.keypoints(batch.q))).mean() < 0.01


def test_joint_regressor_ignores_the_camera_pose(kinematics):
    regressor = JointRegressor(JOINTS, providers='cpu')
    batch = held_out(kinematics, 70.21)[0]
    base = kinematics.keypoints(batch.q[0])
    np.testing.assert_allclose(regressor.predict(batch.X_cam[0]), regressor.predict(base), atol=1e-3)
    with pytest.raises(ValueError, match='points_cam'):
        regressor.predict(np.full((7, 3), np.nan))


def test_missing_or_corrupt_models_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match='manifest not found'):
        DiffusionLifter(tmp_path / 'absent.onnx')
    shutil.copy(LIFTER.with_suffix('.yaml'), tmp_path / 'broken.yaml')
    (tmp_path / 'broken.onnx').write_bytes(b'not an onnx model')
    with pytest.raises(ModelLoadError, match='cannot load ONNX model'):
        DiffusionLifter(tmp_path / 'broken.onnx')
    shutil.copy(LIFTER, tmp_path / 'no_sde.onnx')
    manifest = yaml.safe_load(LIFTER.with_suffix('.yaml').read_text())
    del manifest['sde']
    (tmp_path / 'no_sde.yaml').write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelLoadError, match='lacks "sde"'):
        DiffusionLifter(tmp_path / 'no_sde.onnx')
    shutil.copy(JOINTS.with_suffix('.yaml'), tmp_path / 'joints.yaml')
    with pytest.raises(ModelLoadError, match='model file not found'):
        JointRegressor(tmp_path / 'joints.onnx')
