"""Calibration aggregate (accuracy, outliers, 180-degree rotations, reported uncertainty, view bias), root-frame
composition, the sample window, capture guidance, drift, and the YAML store (round trip, names, atomic replacement,
corrupt files, files without the newer fields)."""
import datetime
import math

import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation
from scipy.stats import chi

from kp_pose_ros.core.transforms import (
    invert_transform,
    make_transform,
    matrix_to_quat_xyzw,
    rotation_error_deg,
    transform_points,
    translation_error,
)
from kp_pose_ros.robot.calibration import (
    CalibrationError,
    CalibrationSample,
    CalibrationWindow,
    aggregate,
    compose_root,
    group_configurations,
)
from kp_pose_ros.robot.calibration_store import (
    FORMAT,
    CalibrationFileError,
    drift,
    list_calibrations,
    load_calibration,
    save_calibration,
    uncertainty_block,
)
from kp_pose_ros.robot.capture_guidance import (
    capture_guidance,
    farthest_candidates,
    image_coverage,
    joint_limit_candidates,
)

# A camera 1.2 m in front of the robot looking back at it: the optical axis (z) along base -x.
T_TRUE = make_transform(Rotation.from_euler('xyz', [-110.0, 5.0, 92.0], degrees=True).as_matrix(),
                        [1.2, 0.15, 0.65])


def noisy_samples(rng, T, n, sigma_t, sigma_r_deg, weights=None):
    """n estimates of T with per-axis Gaussian noise: translation in metres, rotation vector in degrees."""
    out = []
    for i in range(n):
        R = T[:3, :3] @ Rotation.from_rotvec(np.radians(rng.normal(0.0, sigma_r_deg, 3))).as_matrix()
        t = T[:3, 3] + rng.normal(0.0, sigma_t, 3)
        out.append(CalibrationSample(i * 33_000_000, make_transform(R, t), 1.0 if weights is None else weights[i]))
    return out


def perturbed(T, offset_m, angle_deg, rng):
    """T moved by offset_m in a random direction and turned by angle_deg about a random axis."""
    direction = rng.normal(size=3)
    axis = rng.normal(size=3)
    R = T[:3, :3] @ Rotation.from_rotvec(np.radians(angle_deg) * axis / np.linalg.norm(axis)).as_matrix()
    return make_transform(R, T[:3, 3] + offset_m * direction / np.linalg.norm(direction))


def biased_views(rng, views, frames, bias_t, bias_r_deg, noise_t=0.003, noise_r_deg=0.2):
    """``frames`` estimates of T_TRUE from each of ``views`` random arm configurations; the frames of a view share
    one bias (Gaussian per axis: metres, rotation-vector degrees) on top of their own noise."""
    out = []
    for _ in range(views):
        joints = rng.uniform(-2.5, 2.5, 7)
        view = perturbed(T_TRUE, 0.0, 0.0, rng)
        view[:3, 3] += rng.normal(0.0, bias_t, 3)
        view[:3, :3] = view[:3, :3] @ Rotation.from_rotvec(np.radians(rng.normal(0.0, bias_r_deg, 3))).as_matrix()
        for sample in noisy_samples(rng, view, frames, noise_t, noise_r_deg):
            out.append(CalibrationSample(len(out), sample.T_base_cam, joint_positions=joints + rng.normal(0, 1e-3, 7)))
    return out


def _coverage(rng, trials, **views):
    """Fraction of trials whose error each bound covers: the view-aware bounds and the old frame standard error."""
    covered = np.zeros(3)
    bounds = []
    for _ in range(trials):
        result = aggregate(biased_views(rng, **views), translation_floor_m=0.3, rotation_floor_deg=20.0)
        error_t = translation_error(result.T_base_cam, T_TRUE)
        covered += [error_t <= result.translation_uncertainty_m,
                    rotation_error_deg(result.T_base_cam, T_TRUE) <= result.rotation_uncertainty_deg,
                    error_t <= 1.96 * result.translation_stderr_m]
        bounds.append(result.translation_uncertainty_m)
    return covered / trials, float(np.median(bounds)), result


def test_view_bias_is_covered_by_the_uncertainty_not_by_the_frame_spread():
    """30 frames from 3 views, each view 4 cm / 2 deg off on its own (per axis): the frames agree within millimetres
    of their view, so the frame spread promises a precision the calibration does not have; the bound that counts
    each configuration as one draw covers the true error."""
    covered, bound, result = _coverage(np.random.default_rng(21), 100, views=3, frames=10, bias_t=0.04,
                                       bias_r_deg=2.0)
    assert result.num_configurations == 3 and result.effective_configurations == pytest.approx(3.0)
    assert covered[0] >= 0.9 and covered[1] >= 0.9, covered  # ~95 % bounds, 100 trials
    assert covered[2] < 0.6, covered  # the old frame-spread standard error
    assert bound > 0.05  # three views cannot pin the camera to a few centimetres


def test_many_diverse_views_give_a_small_covering_bound():
    covered, bound, result = _coverage(np.random.default_rng(22), 40, views=30, frames=3, bias_t=0.005,
                                       bias_r_deg=0.3)
    assert result.num_configurations == 30
    assert covered[0] >= 0.9 and covered[1] >= 0.9, covered
    assert bound < 0.005  # 9 mm per-view scatter (3D) over 30 views: a few millimetres
    assert result.translation_view_std_m == pytest.approx(0.005 * math.sqrt(3), rel=0.3)


def test_one_configuration_has_no_bound():
    rng = np.random.default_rng(23)
    one_view = biased_views(rng, views=1, frames=30, bias_t=0.05, bias_r_deg=3.0)
    result = aggregate(one_view)
    assert result.num_configurations == 1 and result.effective_configurations == 1.0
    assert math.isinf(result.translation_uncertainty_m) and math.isinf(result.rotation_uncertainty_deg)
    assert result.translation_stderr_m < 0.002  # what the frame spread alone would have promised
    unkeyed = aggregate(noisy_samples(rng, T_TRUE, 30, 0.01, 1.0))  # views unknown: one shared configuration
    assert unkeyed.num_configurations == 1 and math.isinf(unkeyed.translation_uncertainty_m)
    # Two configurations of very unequal weight count little more than one: a very wide bound.
    lopsided = aggregate(one_view + [CalibrationSample(99, one_view[0].T_base_cam, joint_positions=np.full(7, 3.0))])
    assert lopsided.num_configurations == 2 and lopsided.effective_configurations < 1.1
    assert lopsided.coverage_factor > 100


def test_systematic_error_is_added_in_quadrature_to_the_bound():
    """Many views average their noise down to a tiny bound; the estimator's own bias does not average away."""
    rng = np.random.default_rng(24)
    samples = biased_views(rng, views=20, frames=3, bias_t=0.0005, bias_r_deg=0.02)
    plain = aggregate(samples)
    floored = aggregate(samples, systematic_translation_m=0.005, systematic_rotation_deg=0.3)
    assert plain.translation_uncertainty_m < 0.002
    assert math.isclose(floored.translation_uncertainty_m, math.hypot(plain.translation_uncertainty_m, 0.005))
    assert math.isclose(floored.rotation_uncertainty_deg, math.hypot(plain.rotation_uncertainty_deg, 0.3))
    one_view = aggregate(biased_views(rng, views=1, frames=30, bias_t=0.05, bias_r_deg=3.0),
                         systematic_translation_m=0.005)
    assert math.isinf(one_view.translation_uncertainty_m)


def test_group_configurations():
    q = np.zeros(3)
    joints = [q, q + 0.05, q + [0.0, 0.2, 0.0], None, q - 0.09, None, np.zeros(2), q + [0.0, 0.25, 0.0]]
    assert group_configurations(joints, 0.1).tolist() == [0, 0, 1, 2, 0, 2, 3, 1]
    assert group_configurations(joints[:3], 0.0).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match='tolerance'):
        group_configurations(joints, -1.0)
    with pytest.raises(ValueError, match='joint_positions'):
        CalibrationSample(0, T_TRUE, joint_positions=[0.0, np.nan])


def test_identical_samples_give_the_exact_pose_and_zero_spread():
    samples = [CalibrationSample(i, T_TRUE) for i in range(10)]
    result = aggregate(samples)
    np.testing.assert_allclose(result.T_base_cam, T_TRUE, atol=1e-12)
    assert result.num_samples == result.num_inliers == 10
    assert result.translation_std_m < 1e-12 and result.rotation_std_deg < 1e-6
    assert result.translation_threshold_m == 0.01 and result.rotation_threshold_deg == 1.0  # the floors
    assert result.effective_samples == 10
    assert result.keypoint_names is None and len(result.keypoint_mean_residual_px) == 0
    assert math.isnan(result.mean_residual_px)


def test_gaussian_noise_error_matches_the_standard_error_and_meets_the_target():
    """1 cm / 1 deg per axis per frame, 30 frames: the aggregate's error behaves like sigma / sqrt(n), and the
    reported standard error predicts it."""
    n, sigma_t, sigma_r = 30, 0.01, 1.0
    trials = 60
    rng = np.random.default_rng(7)
    err_t, err_r, reported_t, reported_r = [], [], [], []
    for _ in range(trials):
        result = aggregate(noisy_samples(rng, T_TRUE, n, sigma_t, sigma_r))
        err_t.append(translation_error(result.T_base_cam, T_TRUE))
        err_r.append(rotation_error_deg(result.T_base_cam, T_TRUE))
        reported_t.append(result.translation_stderr_m)
        reported_r.append(result.rotation_stderr_deg)
    err_t, err_r = np.array(err_t), np.array(err_r)
    expected_t = sigma_t * math.sqrt(3 / n)  # RMS of the 3D error of a mean of n samples
    expected_r = sigma_r * math.sqrt(3 / n)
    # Each trial: the error norm is chi(3)-distributed; this bound fails with probability 1e-6 per trial.
    bound = chi(3).ppf(1 - 1e-6) / math.sqrt(3)
    assert err_t.max() < bound * expected_t and err_r.max() < bound * expected_r
    # Mean squared error / expected: chi2(3)/3 averaged over 60 trials, sd 0.105; these bounds are ~4 sd wide.
    assert 0.6 < np.mean(err_t ** 2) / expected_t ** 2 < 1.45
    assert 0.6 < np.mean(err_r ** 2) / expected_r ** 2 < 1.45
    assert 0.6 < np.mean(err_t ** 2 / np.array(reported_t) ** 2) < 1.6
    assert 0.6 < np.mean(err_r ** 2 / np.array(reported_r) ** 2) < 1.6
    assert err_t.max() < 0.01 and err_r.max() < 1.0  # the project's target after 30 frames


def test_reported_spread_matches_the_injected_noise():
    sigma_t, sigma_r = 0.01, 1.0
    result = aggregate(noisy_samples(np.random.default_rng(3), T_TRUE, 30, sigma_t, sigma_r))
    # The 3D spread pools 3 x 29 degrees of freedom: relative sd about 8 %.
    assert result.translation_std_m == pytest.approx(sigma_t * math.sqrt(3), rel=0.25)
    assert result.rotation_std_deg == pytest.approx(sigma_r * math.sqrt(3), rel=0.25)
    np.testing.assert_allclose(result.translation_std_xyz_m, sigma_t, rtol=0.4)
    np.testing.assert_allclose(result.rotation_std_xyz_deg, sigma_r, rtol=0.4)
    assert result.translation_stderr_m == pytest.approx(result.translation_std_m / math.sqrt(30))
    assert result.rotation_stderr_deg == pytest.approx(result.rotation_std_deg / math.sqrt(30))


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('clustered', [False, True])
def test_gross_outliers_are_rejected(seed, clustered):
    """20 % of the frames 20 cm and 30 deg off (scattered, or all the same wrong pose, as a mislabelled keypoint
    gives): all of them rejected, the good frames kept, result within 5 mm / 0.5 deg."""
    rng = np.random.default_rng(seed)
    samples = noisy_samples(rng, T_TRUE, 30, 0.005, 0.5)
    bad = rng.choice(30, 6, replace=False)
    wrong = perturbed(T_TRUE, 0.20, 30.0, rng)
    for i in bad:
        T_bad = wrong if clustered else perturbed(T_TRUE, 0.20, 30.0, rng)
        samples[i] = CalibrationSample(samples[i].stamp_ns, T_bad)
    result = aggregate(samples)
    assert not np.any(result.inliers[bad])
    # Each good frame passes both tests with probability 0.999: rarely one of 24 is dropped (1 run in 60 here).
    assert result.num_inliers >= 23
    assert translation_error(result.T_base_cam, T_TRUE) < 0.005
    assert rotation_error_deg(result.T_base_cam, T_TRUE) < 0.5
    # Without rejection the outliers would drag a plain mean centimetres away.
    plain_mean = np.mean([s.T_base_cam[:3, 3] for s in samples], axis=0)
    assert np.linalg.norm(plain_mean - T_TRUE[:3, 3]) > 0.01 or not clustered


def test_rotations_near_180_degrees_average_across_the_sign_flip():
    # Symmetric about a half turn: 179 and 181 degrees about z (quaternions of opposite sign in canonical form).
    t = np.array([0.5, -0.2, 1.0])
    half_turn = Rotation.from_rotvec([0.0, 0.0, math.pi])
    samples = [CalibrationSample(i, make_transform(Rotation.from_rotvec([0.0, 0.0, angle]).as_matrix(), t))
               for i, angle in enumerate(np.radians([179.0, 181.0, 179.5, 180.5]))]
    quats = [matrix_to_quat_xyzw(s.T_base_cam[:3, :3]) for s in samples]
    assert np.sign(quats[0][2]) != np.sign(quats[1][2])  # the canonical signs do flip across the half turn
    result = aggregate(samples, min_samples=4)
    assert rotation_error_deg(result.T_base_cam[:3, :3], half_turn.as_matrix()) < 1e-9
    assert result.num_inliers == 4
    # Noisy samples around a half turn about an oblique axis.
    axis = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    T = make_transform(Rotation.from_rotvec(math.pi * axis).as_matrix(), t)
    result = aggregate(noisy_samples(np.random.default_rng(11), T, 30, 0.01, 1.0))
    assert result.num_inliers >= 29
    assert rotation_error_deg(result.T_base_cam, T) < 0.8
    assert result.rotation_std_deg == pytest.approx(math.sqrt(3), rel=0.25)  # no spurious 360-degree spread


def test_weights_scale_the_mean_and_the_effective_count():
    t0 = T_TRUE[:3, 3]
    samples = [CalibrationSample(i, make_transform(T_TRUE[:3, :3], t0 + [dx, 0.0, 0.0]), w)
               for i, (dx, w) in enumerate([(0.0, 1.0), (0.001, 1.0), (0.002, 2.0)])]
    result = aggregate(samples, min_samples=3)
    np.testing.assert_allclose(result.T_base_cam[:3, 3], t0 + [0.00125, 0.0, 0.0], atol=1e-12)
    assert result.effective_samples == pytest.approx(16 / 6)
    # Reliability-weighted variance: sum w (x - mean)^2 / (V1 - V2 / V1) = 2.75 mm^2 / 2.5
    np.testing.assert_allclose(result.translation_std_xyz_m, [math.sqrt(1.1) * 1e-3, 0.0, 0.0], atol=1e-12)


def test_keypoint_residual_statistics_over_inliers():
    names = ('shoulder', 'elbow', 'wrist')
    residuals = [[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [2.0, 4.0, np.nan], [2.0, 3.0, np.nan],
                 [2.0, 1.0, np.nan], [100.0, 100.0, 100.0]]
    poses = [T_TRUE] * 5 + [perturbed(T_TRUE, 0.3, 40.0, np.random.default_rng(0))]
    samples = [CalibrationSample(i, T, residuals_px=r, keypoint_names=names)
               for i, (T, r) in enumerate(zip(poses, residuals))]
    assert samples[0].mean_residual_px == 1.5
    result = aggregate(samples)
    assert list(result.inliers) == [True] * 5 + [False]
    assert result.keypoint_names == names
    np.testing.assert_allclose(result.keypoint_mean_residual_px, [2.0, 2.5, np.nan])
    assert result.mean_residual_px == pytest.approx(20.0 / 9)


def test_aggregate_refuses_too_few_or_inconsistent_samples():
    rng = np.random.default_rng(0)
    with pytest.raises(CalibrationError, match='4 samples captured; at least 5'):
        aggregate(noisy_samples(rng, T_TRUE, 4, 0.01, 1.0))
    with pytest.raises(CalibrationError, match='0 samples captured'):
        aggregate([])
    samples = noisy_samples(rng, T_TRUE, 10, 0.002, 0.2)
    samples[:3] = [CalibrationSample(i, perturbed(T_TRUE, 0.2, 30.0, rng)) for i in range(3)]
    with pytest.raises(CalibrationError, match=r'only 7 of 10 samples agree .*inconsistent'):
        aggregate(samples, min_inlier_fraction=0.9)
    with pytest.raises(TypeError, match='not a CalibrationSample'):
        aggregate([T_TRUE] * 5)
    with pytest.raises(ValueError, match='inlier_quantile'):
        aggregate(samples, inlier_quantile=1.0)


def test_samples_are_validated():
    with pytest.raises(ValueError, match='T_base_cam'):
        CalibrationSample(0, np.eye(3))
    with pytest.raises(ValueError, match='not a rotation'):
        CalibrationSample(0, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match='weight'):
        CalibrationSample(0, T_TRUE, weight=0.0)
    with pytest.raises(ValueError, match='residuals_px'):
        CalibrationSample(0, T_TRUE, residuals_px=[1.0, -1.0])
    with pytest.raises(ValueError, match='keypoint_names'):
        CalibrationSample(0, T_TRUE, residuals_px=[1.0, 2.0], keypoint_names=('a',))
    mixed = [CalibrationSample(i, T_TRUE, residuals_px=[1.0] * (2 + i % 2)) for i in range(5)]
    with pytest.raises(ValueError, match='same keypoints'):
        aggregate(mixed)
    renamed = [CalibrationSample(i, T_TRUE, residuals_px=[1.0], keypoint_names=(f'k{i % 2}',)) for i in range(5)]
    with pytest.raises(ValueError, match='name their keypoints differently'):
        aggregate(renamed)


def test_window_keeps_the_latest_samples_within_age():
    window = CalibrationWindow(max_samples=3)
    for i in range(5):
        window.add(CalibrationSample(i, T_TRUE))
    assert len(window) == 3 and [s.stamp_ns for s in window.samples] == [2, 3, 4]
    window.clear()
    assert len(window) == 0 and window.samples == []

    aged = CalibrationWindow(max_samples=10, max_age_ns=1_000_000_000)
    for stamp in (0, 400_000_000, 900_000_000, 1_300_000_000, 2_250_000_000):
        aged.add(CalibrationSample(stamp, T_TRUE))
    assert [s.stamp_ns for s in aged.samples] == [1_300_000_000, 2_250_000_000]
    aged.add(CalibrationSample(100, T_TRUE))  # a stale sample arriving late is dropped at once
    assert len(aged) == 2
    with pytest.raises(ValueError, match='max_samples'):
        CalibrationWindow(0)
    with pytest.raises(TypeError, match='CalibrationSample'):
        window.add(T_TRUE)


def test_compose_root_against_a_hand_built_chain():
    # camera_link 1 m in front of the base, 0.5 m up, turned to face the robot (yaw 180 deg).
    T_base_root = make_transform(Rotation.from_euler('z', 180, degrees=True).as_matrix(), [1.0, 0.0, 0.5])
    # The driver's optical frame: x right (-y of camera_link), y down (-z), z forward (+x), 15 mm to the side.
    R_root_optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    T_root_optical = make_transform(R_root_optical, [0.0, 0.015, 0.0])
    # A point 2 m along the optical axis is 2 m in front of camera_link, i.e. 1 m behind the base origin.
    T_base_optical = T_base_root @ T_root_optical
    np.testing.assert_allclose(transform_points(T_base_optical, [[0.0, 0.0, 2.0]]), [[-1.0, -0.015, 0.5]],
                               atol=1e-12)
    np.testing.assert_allclose(compose_root(T_base_optical, T_root_optical), T_base_root, atol=1e-12)
    np.testing.assert_allclose(compose_root(T_base_optical, np.eye(4)), T_base_optical, atol=1e-12)
    np.testing.assert_allclose(compose_root(T_base_optical, T_base_optical), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(compose_root(T_base_optical, T_root_optical) @ T_root_optical, T_base_optical,
                               atol=1e-12)
    assert not np.allclose(compose_root(T_base_optical, invert_transform(T_root_optical)), T_base_root)


# ---------------------------------------------------------------- YAML store

def _result():
    names = ('base', 'elbow')
    rng = np.random.default_rng(5)
    samples = noisy_samples(rng, T_TRUE, 12, 0.01, 1.0)
    samples = [CalibrationSample(s.stamp_ns, s.T_base_cam, residuals_px=[1.5, np.nan], keypoint_names=names)
               for s in samples]
    return aggregate(samples)


def test_yaml_round_trip_is_exact(tmp_path):
    result = _result()
    T = compose_root(result.T_base_cam, make_transform(np.eye(3), [0.0, 0.015, 0.0]))
    metadata = {'camera': 'realsense', 'frames': np.int64(30), 'joints': np.array([0.1, -0.2]),
                'nested': {'ok': True, 'missing': float('nan')}}
    path = save_calibration(tmp_path / 'new' / 'dir', 'lab_bench-1', T, 'panda_link0', 'camera_link',
                            result=result, metadata=metadata)
    assert path == tmp_path / 'new' / 'dir' / 'lab_bench-1.yaml'
    loaded = load_calibration(path)
    np.testing.assert_allclose(loaded.transform, T, atol=1e-12)
    assert (loaded.parent_frame, loaded.child_frame, loaded.name) == ('panda_link0', 'camera_link', 'lab_bench-1')
    assert loaded.metadata == {'camera': 'realsense', 'frames': 30, 'joints': [0.1, -0.2],
                               'nested': {'ok': True, 'missing': None}}
    assert loaded.created.tzinfo is not None and loaded.created.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - loaded.created).total_seconds()) < 60
    assert loaded.tool.startswith('kp_pose_ros') and loaded.method
    u = loaded.uncertainty
    assert (u['num_samples'], u['num_inliers']) == (result.num_samples, result.num_inliers)
    assert u['translation_std_m']['norm'] == result.translation_std_m
    assert u['rotation_std_deg']['x'] == result.rotation_std_xyz_deg[0]
    assert u['translation_stderr_m'] == result.translation_stderr_m
    assert u['keypoint_mean_residual_px'] == {'base': 1.5, 'elbow': None}
    assert u['num_configurations'] == 1 and u['translation_uncertainty_m'] is None  # unbounded: written as null
    # By name from the directory gives the same; the file reads as documented.
    by_name = load_calibration(tmp_path / 'new' / 'dir', 'lab_bench-1')
    np.testing.assert_array_equal(by_name.transform, loaded.transform)
    raw = yaml.safe_load(path.read_text())
    assert raw['format'] == FORMAT
    q = [raw['transform']['rotation'][k] for k in 'xyzw']
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), T[:3, :3], atol=1e-12)
    rpy = [raw['rpy_deg'][k] for k in ('roll', 'pitch', 'yaw')]
    np.testing.assert_allclose(Rotation.from_euler('xyz', rpy, degrees=True).as_matrix(), T[:3, :3], atol=1e-12)


def test_bounds_round_trip_and_old_files_load(tmp_path):
    result = aggregate(biased_views(np.random.default_rng(24), views=12, frames=3, bias_t=0.004, bias_r_deg=0.2))
    loaded = load_calibration(save_calibration(tmp_path, 'views', result.T_base_cam, 'base', 'cam', result=result))
    u = loaded.uncertainty
    assert u['num_configurations'] == 12 and u['effective_configurations'] == pytest.approx(12.0)
    assert u['translation_uncertainty_m'] == result.translation_uncertainty_m < 0.01
    assert u['rotation_uncertainty_deg'] == result.rotation_uncertainty_deg
    assert u['translation_view_std_m'] == result.translation_view_std_m
    assert u['rotation_view_std_deg'] == result.rotation_view_std_deg
    newer = ('num_configurations', 'effective_configurations', 'translation_uncertainty_m',
             'rotation_uncertainty_deg', 'translation_view_std_m', 'rotation_view_std_deg')
    old = load_calibration(_write_variant(tmp_path, lambda d: d.update(uncertainty={
        k: v for k, v in u.items() if k not in newer})))
    assert 'translation_uncertainty_m' not in old.uncertainty


def test_drift_tolerance_is_both_uncertainties():
    rng = np.random.default_rng(25)
    saved = aggregate(biased_views(rng, views=12, frames=3, bias_t=0.003, bias_r_deg=0.2))
    block = uncertainty_block(saved)
    live = aggregate(biased_views(rng, views=1, frames=30, bias_t=0.002, bias_r_deg=0.1))  # one view: unbounded
    near = drift(saved.T_base_cam, block, live.T_base_cam, live, min_translation_m=0.001, min_rotation_deg=0.1)
    # One live view: the saved per-view scatter stands in for its bias, on top of the saved bound.
    assert near.translation_tolerance_m == pytest.approx(
        saved.translation_uncertainty_m + 1.959964 * math.hypot(saved.translation_view_std_m,
                                                                live.translation_stderr_m))
    assert near.ratio <= 1.0
    bumped = perturbed(live.T_base_cam, 0.03, 2.0, rng)
    far = drift(saved.T_base_cam, block, bumped, live, min_translation_m=0.001, min_rotation_deg=0.1)
    assert far.translation_m == pytest.approx(translation_error(bumped, saved.T_base_cam)) and far.ratio > 2.0
    # A file without bounds: judged on the live frames and the minima.
    bare = drift(saved.T_base_cam, None, bumped, live, min_translation_m=0.005, min_rotation_deg=0.5)
    assert bare.translation_tolerance_m == 0.005 and bare.ratio > 5.0


def test_capture_guidance_counts_views_spread_and_image_coverage():
    one_pose = [[0.0, -0.5, 0.0, -2.0, 0.0, 1.5, 0.8]] * 10
    names = [f'panda_joint{i}' for i in range(1, 8)]
    pixels = [np.array([[100.0, 80.0], [120.0, 90.0], [np.nan, np.nan]])] * 10
    g = capture_guidance(one_pose, names, pixels=pixels, image_size=(640, 480))
    assert (g.num_samples, g.num_configurations, g.diverse) == (10, 1, False)
    assert g.image_coverage == pytest.approx(1 / 9) and 'centre' in g.uncovered_regions
    assert 'top left' not in g.uncovered_regions
    assert len(g.missing) == 3 and 'capture at least 5 more distinct arm configurations' in g.summary()
    assert g.suggestions.shape == (0, 7) and math.isnan(capture_guidance(one_pose).image_coverage)

    rng = np.random.default_rng(26)
    lower, upper = np.full(7, -2.5), np.full(7, 2.5)
    many = rng.uniform(lower, upper, (8, 7))
    many[:, 6] = 0.3  # the wrist never turned
    spread_out = [[x, y] for x in (50, 320, 600) for y in (40, 240, 450)]
    g = capture_guidance(many, names, pixels=[np.array(spread_out)], image_size=(640, 480),
                         candidates=joint_limit_candidates(lower, upper, 200), num_suggestions=2)
    assert g.num_configurations == 8 and g.image_coverage == 1.0 and g.uncovered_regions == ()
    assert g.diverse and g.summary().endswith('diverse enough')
    assert g.least_varied_joints[0] == 'panda_joint7'
    assert g.suggestions.shape == (2, 7) and np.all(g.suggestions >= lower) and np.all(g.suggestions <= upper)


def test_farthest_candidates_fill_the_gaps():
    captured = np.array([[0.0, 0.0], [0.1, 0.0]])
    candidates = np.array([[0.05, 0.0], [1.0, 1.0], [0.9, 1.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(farthest_candidates(captured, candidates, 2), [[1.0, 1.0], [-1.0, -1.0]])
    assert len(farthest_candidates(np.zeros((0, 2)), candidates, 9)) == 4
    with pytest.raises(ValueError, match='lower < upper'):
        joint_limit_candidates([0.0], [0.0])
    with pytest.raises(ValueError, match='image_size'):
        image_coverage([], (0, 480))


def test_bare_transform_and_gimbal_lock_round_trip(tmp_path):
    T = make_transform(Rotation.from_euler('xyz', [10.0, 90.0, 30.0], degrees=True).as_matrix(), [0.0, 0.0, 1.0])
    path = save_calibration(tmp_path, 'gimbal', T, 'base', 'cam')
    loaded = load_calibration(path)
    np.testing.assert_allclose(loaded.transform, T, atol=1e-12)
    assert loaded.uncertainty is None and loaded.metadata == {}


@pytest.mark.parametrize('name', ['', 'a b', '../evil', 'x.yaml', 'a/b', 'caf\u00e9', 'x' * 101, None])
def test_invalid_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="letters, digits, '-' or '_'"):
        save_calibration(tmp_path, name, T_TRUE, 'base', 'cam')
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_bad_frames_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="child_frame '/cam' starts with '/'"):
        save_calibration(tmp_path, 'x', T_TRUE, 'base', '/cam')
    with pytest.raises(ValueError, match='both'):
        save_calibration(tmp_path, 'x', T_TRUE, 'base', 'base')
    with pytest.raises(ValueError, match='metadata.when holds a datetime'):
        save_calibration(tmp_path, 'x', T_TRUE, 'base', 'cam', metadata={'when': datetime.datetime.now()})
    with pytest.raises(ValueError, match='not a rotation'):
        save_calibration(tmp_path, 'x', np.diag([1.0, 1.0, -1.0, 1.0]), 'base', 'cam')
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_replaces_whole(tmp_path, monkeypatch):
    first = save_calibration(tmp_path, 'cal', T_TRUE, 'base', 'cam', metadata={'version': 1})
    old_text = first.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ['cal.yaml']  # no temp file left behind

    real_dump = yaml.safe_dump

    def dump_half_then_fail(data, stream, **kwargs):
        text = real_dump(data, **kwargs)
        stream.write(text[:len(text) // 2])
        stream.flush()
        raise OSError('disk full')

    monkeypatch.setattr(yaml, 'safe_dump', dump_half_then_fail)
    T_new = perturbed(T_TRUE, 0.1, 10.0, np.random.default_rng(1))
    with pytest.raises(OSError, match='disk full'):
        save_calibration(tmp_path, 'cal', T_new, 'base', 'cam', metadata={'version': 2})
    assert first.read_text() == old_text  # the old calibration survives intact
    assert [p.name for p in tmp_path.iterdir()] == ['cal.yaml']
    monkeypatch.undo()

    save_calibration(tmp_path, 'cal', T_new, 'base', 'cam', metadata={'version': 2})
    loaded = load_calibration(tmp_path, 'cal')
    np.testing.assert_allclose(loaded.transform, T_new, atol=1e-12)
    assert loaded.metadata == {'version': 2}
    assert [p.name for p in tmp_path.iterdir()] == ['cal.yaml']


def test_list_calibrations(tmp_path):
    assert list_calibrations(tmp_path / 'missing') == []
    for name in ('zeta', 'alpha_1', 'b-2'):
        save_calibration(tmp_path, name, T_TRUE, 'base', 'cam')
    (tmp_path / 'notes.txt').write_text('x')
    (tmp_path / '.cal.yaml.123-abc.tmp').write_text('x')
    (tmp_path / 'bad name.yaml').write_text('x')
    assert list_calibrations(tmp_path) == ['alpha_1', 'b-2', 'zeta']
    with pytest.raises(NotADirectoryError):
        list_calibrations(tmp_path / 'notes.txt')


def _write_variant(tmp_path, edit):
    """A valid calibration file, edited by edit(document) before it is written back."""
    path = save_calibration(tmp_path, 'cal', T_TRUE, 'base', 'cam')
    document = yaml.safe_load(path.read_text())
    edit(document)
    path.write_text(yaml.safe_dump(document))
    return path


def _scale_quaternion(factor):
    def edit(d):
        d['transform']['rotation'] = {k: v * factor for k, v in d['transform']['rotation'].items()}
        d.pop('rpy_deg')
    return edit



def test_created_with_utc_designator_reads_on_every_python(tmp_path):
    """A hand-written 'created: "...Z"' (quoted, so YAML keeps it a string): Python 3.10 (Humble) does not parse the Z
    in fromisoformat, 3.11 does; both must give the same aware UTC time."""
    path = _write_variant(tmp_path, lambda d: d.update(created='2024-05-01T12:30:00Z'))
    assert load_calibration(path).created == datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)

@pytest.mark.parametrize('edit, message', [
    (lambda d: d.pop('format'), 'missing key format'),
    (lambda d: d.update(format='kp_pose_ros/calibration/v2'), "format 'kp_pose_ros/calibration/v2'"),
    (lambda d: d['transform']['rotation'].pop('w'), r'missing key transform.rotation.w'),
    (lambda d: d.pop('child_frame'), 'missing key child_frame'),
    (lambda d: d.update(parent_frame=''), 'parent_frame must be a non-empty string'),
    (lambda d: d['transform'].update(translation=[1, 2, 3]), 'transform.translation must be a mapping'),
    (lambda d: d['transform']['translation'].update(x='one'), r"transform.translation.x must be a finite number"),
    (lambda d: d['transform']['translation'].update(y=float('nan')), 'must be a finite number'),
    (_scale_quaternion(2.0), 'not normalised'),
    (lambda d: d['rpy_deg'].update(yaw=d['rpy_deg']['yaw'] + 1.0), 'rpy_deg .* is not the rotation'),
    (lambda d: d.update(metadata=[1, 2]), 'metadata must be a mapping'),
    (lambda d: d.update(created='yesterday'), 'not an ISO 8601'),
])
def test_corrupt_files_are_refused(tmp_path, edit, message):
    path = _write_variant(tmp_path, edit)
    with pytest.raises(CalibrationFileError, match=message) as err:
        load_calibration(path)
    assert str(path) in str(err.value)


def test_quaternion_rounding_and_sign_are_accepted(tmp_path):
    loaded = load_calibration(_write_variant(tmp_path, _scale_quaternion(1.001)))
    np.testing.assert_allclose(loaded.transform, T_TRUE, atol=1e-12)
    loaded = load_calibration(_write_variant(tmp_path, _scale_quaternion(-1.0)))  # -q is the same rotation
    np.testing.assert_allclose(loaded.transform, T_TRUE, atol=1e-12)


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_calibration(tmp_path / 'nope.yaml')
    save_calibration(tmp_path, 'kitchen', T_TRUE, 'base', 'cam')
    with pytest.raises(FileNotFoundError, match=r"no calibration named 'lab' .*saved there: kitchen"):
        load_calibration(tmp_path, 'lab')
    with pytest.raises(ValueError, match='is invalid'):
        load_calibration(tmp_path, '../kitchen')
    broken = tmp_path / 'broken.yaml'
    broken.write_text('format: [unclosed\n')
    with pytest.raises(CalibrationFileError, match='not valid YAML'):
        load_calibration(broken)
    broken.write_bytes(b'\xff\xfe\x00garbage')
    with pytest.raises(CalibrationFileError, match='not valid YAML'):
        load_calibration(broken)
    broken.write_text('- just\n- a list\n')
    with pytest.raises(CalibrationFileError, match='expected a mapping'):
        load_calibration(broken)
    broken.write_text('')
    with pytest.raises(CalibrationFileError, match='expected a mapping'):
        load_calibration(broken)
