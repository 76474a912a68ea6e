"""Umeyama, robust 3D-3D fitting and PnP RANSAC on synthetic keypoints with known poses."""
import math

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.rigid_fit import DegenerateGeometryError, p3p_hypotheses, pnp_ransac, robust_rigid_fit, umeyama
from kp_pose_ros.core.transforms import make_transform, rotation_error_deg, transform_points, translation_error

K = np.array([[615.0, 0.0, 320.0], [0.0, 615.0, 240.0], [0.0, 0.0, 1.0]])
D = np.array([0.08, -0.15, 0.001, -0.002, 0.05])


def _arm_like_points(rng, n):
    """n keypoints spread like an arm's links: within about 0.5 m of each other."""
    return rng.uniform([-0.3, -0.3, 0.0], [0.3, 0.3, 1.0], size=(n, 3))


def _random_transform(rng, angle=None):
    rotation = Rotation.random(random_state=rng)
    if angle is not None:
        rotation = Rotation.from_rotvec(angle * rotation.as_rotvec() / rotation.magnitude())
    return make_transform(rotation.as_matrix(), rng.uniform(-1.0, 1.0, 3))


def _camera_from_robot(rng):
    """A camera 1.5-2 m from the robot, looking at it (the points land in front of the camera)."""
    R = Rotation.from_euler('xyz', rng.uniform(-0.3, 0.3, 3)).as_matrix()
    return make_transform(R, [rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(1.5, 2.0)])


@pytest.mark.parametrize('angle', [None, None, 0.0, math.pi - 1e-7, math.pi])
def test_umeyama_recovers_exact_rotation(angle):
    rng = np.random.default_rng(1)
    T = _random_transform(rng, angle)
    src = _arm_like_points(rng, 8)
    R, t = umeyama(src, transform_points(T, src))
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(R, T[:3, :3], atol=1e-10)
    np.testing.assert_allclose(t, T[:3, 3], atol=1e-10)


def test_umeyama_with_scale_and_three_points():
    rng = np.random.default_rng(2)
    T = _random_transform(rng)
    src = _arm_like_points(rng, 3)
    dst = 2.5 * src @ T[:3, :3].T + T[:3, 3]
    R, t, s = umeyama(src, dst, with_scale=True)
    assert s == pytest.approx(2.5, rel=1e-10)
    np.testing.assert_allclose(R, T[:3, :3], atol=1e-10)
    np.testing.assert_allclose(t, T[:3, 3], atol=1e-10)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(3)
    src = _arm_like_points(rng, 6)
    R, _ = umeyama(src, src * [1.0, 1.0, -1.0])  # a mirror image: no rotation maps one onto the other
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)


def test_umeyama_weights_ignore_a_zero_weight_row():
    rng = np.random.default_rng(4)
    T = _random_transform(rng)
    src = _arm_like_points(rng, 6)
    dst = transform_points(T, src)
    dst[2] += 0.5
    weights = np.ones(6)
    weights[2] = 0.0
    R, t = umeyama(src, dst, weights=weights)
    np.testing.assert_allclose(make_transform(R, t), T, atol=1e-10)


@pytest.mark.parametrize('src, dst, error, message', [
    (np.zeros((2, 3)), np.zeros((2, 3)), ValueError, 'at least 3'),
    ([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]], [[0, 0, 0], [0, 1, 0], [0, 2, 0], [0, 3, 0]],
     DegenerateGeometryError, 'collinear'),
    (np.ones((4, 3)), np.ones((4, 3)), DegenerateGeometryError, 'collinear or coincident'),
    ([[0, 0, 0], [1, 0, 0], [0, 1, np.nan]], np.eye(3), ValueError, 'NaN'),
    (np.zeros((4, 3)), np.zeros((5, 3)), ValueError, 'same shape'),
    (np.zeros((4, 2)), np.zeros((4, 2)), ValueError, r'shape \(N, 3\)'),
])
def test_umeyama_degenerate_input(src, dst, error, message):
    with pytest.raises(error, match=message):
        umeyama(src, dst)


@pytest.mark.parametrize('n, outliers', [(7, 2), (9, 3)])
@pytest.mark.parametrize('loss', ['cauchy', 'huber', None])
def test_robust_fit_rejects_30_percent_gross_outliers(n, outliers, loss):
    rng = np.random.default_rng(n + outliers)
    for _ in range(10):
        T = _random_transform(rng)
        src = _arm_like_points(rng, n)
        dst = transform_points(T, src)
        bad = rng.choice(n, outliers, replace=False)
        dst[bad] += rng.normal(size=(outliers, 3)) * 0.3 + np.sign(rng.normal(size=(outliers, 3))) * 0.1
        result = robust_rigid_fit(src, dst, inlier_threshold_m=0.02, loss=loss)
        assert result.success, result.message
        assert translation_error(result.T, T) < 1e-3
        assert rotation_error_deg(result.T, T) < 0.1
        expected = np.ones(n, dtype=bool)
        expected[bad] = False
        np.testing.assert_array_equal(result.inliers, expected)
        assert result.num_inliers == n - outliers
        assert np.all(result.residuals[bad] > 0.02)
        assert result.rms < 1e-9


def test_robust_fit_with_noise_stays_accurate():
    rng = np.random.default_rng(11)
    T = _random_transform(rng)
    src = _arm_like_points(rng, 9)
    dst = transform_points(T, src) + rng.normal(scale=0.003, size=(9, 3))
    dst[[1, 5]] += [0.0, 0.25, 0.0]
    result = robust_rigid_fit(src, dst, inlier_threshold_m=0.015)
    assert result.success
    assert not result.inliers[1] and not result.inliers[5] and result.num_inliers == 7
    assert translation_error(result.T, T) < 0.006
    assert rotation_error_deg(result.T, T) < 1.0
    assert 0.001 < result.rms < 0.006


def test_robust_fit_skips_missing_keypoints():
    rng = np.random.default_rng(5)
    T = _random_transform(rng)
    src = _arm_like_points(rng, 8)
    dst = transform_points(T, src)
    dst[3] = np.nan
    src[6, 1] = np.nan
    result = robust_rigid_fit(src, dst, inlier_threshold_m=0.01)
    assert result.success
    np.testing.assert_allclose(result.T, T, atol=1e-10)
    assert np.isnan(result.residuals[[3, 6]]).all()
    assert not result.inliers[3] and not result.inliers[6] and result.num_inliers == 6


def test_robust_fit_failures_are_results_not_exceptions():
    src = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    dst = src.copy()
    dst[1:3] = np.nan
    result = robust_rigid_fit(src, dst, inlier_threshold_m=0.01)
    assert not result.success and result.T is None and 'only 2 of 4' in result.message
    assert not result.inliers.any()

    collinear = np.outer(np.arange(5.0), [1.0, 0.0, 0.0])
    result = robust_rigid_fit(collinear, collinear, inlier_threshold_m=0.01)
    assert not result.success and 'collinear' in result.message

    with pytest.raises(ValueError, match='inlier_threshold_m'):
        robust_rigid_fit(src, src, inlier_threshold_m=0.0)
    with pytest.raises(ValueError, match='loss'):
        robust_rigid_fit(src, src, inlier_threshold_m=0.01, loss='tukey')


def test_robust_fit_sampled_hypotheses_are_seeded():
    rng = np.random.default_rng(6)
    T = _random_transform(rng)
    src = _arm_like_points(rng, 40)
    dst = transform_points(T, src)
    dst[:12] += rng.uniform(0.1, 0.5, size=(12, 3))
    first = robust_rigid_fit(src, dst, inlier_threshold_m=0.01, max_hypotheses=100, seed=3)
    second = robust_rigid_fit(src, dst, inlier_threshold_m=0.01, max_hypotheses=100, seed=3)
    assert first.success and first.num_inliers == 28
    np.testing.assert_allclose(first.T, T, atol=1e-10)
    np.testing.assert_array_equal(first.T, second.T)


def _project(T, points):
    pixels, _ = cv2.projectPoints(points, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], K, D)
    return pixels.reshape(-1, 2)


def test_pnp_recovers_exact_pose():
    rng = np.random.default_rng(7)
    for _ in range(10):
        T = _camera_from_robot(rng)
        points = _arm_like_points(rng, 7)
        result = pnp_ransac(points, _project(T, points), K, D, reprojection_error_px=3.0)
        assert result.success, result.message
        np.testing.assert_allclose(result.T, T, atol=1e-6)
        assert result.inliers.all() and result.rms < 1e-6


@pytest.mark.parametrize('n', [7, 9])
def test_pnp_rejects_two_gross_outliers_and_skips_missing_rows(n):
    rng = np.random.default_rng(8 + n)
    for _ in range(10):
        T = _camera_from_robot(rng)
        points = _arm_like_points(rng, n + 1)
        pixels = _project(T, points)
        pixels[[1, 4]] += rng.choice([-1.0, 1.0], size=(2, 2)) * rng.uniform(40, 120, size=(2, 2))
        pixels[n] = np.nan
        result = pnp_ransac(points, pixels, K, D, reprojection_error_px=3.0)
        assert result.success, result.message
        assert translation_error(result.T, T) < 1e-6 and rotation_error_deg(result.T, T) < 1e-4
        expected = np.ones(n + 1, dtype=bool)
        expected[[1, 4, n]] = False
        np.testing.assert_array_equal(result.inliers, expected)
        assert np.all(result.residuals[[1, 4]] > 30) and np.isnan(result.residuals[n])


def test_pnp_without_distortion_coefficients():
    rng = np.random.default_rng(9)
    T = _camera_from_robot(rng)
    points = _arm_like_points(rng, 6)
    pixels, _ = cv2.projectPoints(points, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], K, None)
    result = pnp_ransac(points, pixels.reshape(-1, 2), K, None)
    assert result.success
    np.testing.assert_allclose(result.T, T, atol=1e-6)


def test_pnp_failures_are_results_not_exceptions():
    rng = np.random.default_rng(10)
    T = _camera_from_robot(rng)
    points = _arm_like_points(rng, 6)
    pixels = _project(T, points)
    pixels[:3] = np.nan
    result = pnp_ransac(points, pixels, K, D)
    assert not result.success and result.T is None and 'only 3 of 6' in result.message
    assert not result.inliers.any() and np.isnan(result.residuals).all()

    scattered = rng.uniform(0, 640, size=(6, 2))  # pixels unrelated to the points: no consistent pose
    result = pnp_ransac(points, scattered, K, D, reprojection_error_px=1.0)
    assert not result.success and result.T is None and result.message


@pytest.mark.parametrize('kwargs, message', [
    (dict(K=np.eye(2)), 'K must be'),
    (dict(K=np.diag([0.0, 615.0, 1.0])), 'positive focal lengths'),
    (dict(D=np.zeros(3)), 'D must hold'),
    (dict(reprojection_error_px=-1.0), 'reprojection_error_px'),
    (dict(image_points=np.zeros((5, 2))), 'differ in length'),
])
def test_pnp_bad_arguments_raise(kwargs, message):
    arguments = dict(object_points=np.zeros((6, 3)), image_points=np.zeros((6, 2)), K=K, D=D)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        pnp_ransac(**arguments)


def test_p3p_hypotheses_skip_the_nan_poses_of_degenerate_subsets():
    """OpenCV's P3P returns NaN poses for some degenerate triples (here three collinear model points); they are
    skipped instead of failing the whole hypothesis set (seen in robot_calib under load)."""
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    obj = np.array([[-0.58, -0.07, -0.06], [-0.31, 0.18, -0.06], [-0.445, 0.055, -0.06]])
    img = np.array([[124.0, 337.0], [335.0, 57.0], [628.0, 366.0]])
    poses = p3p_hypotheses(obj, img, K)
    assert np.all(np.isfinite(poses))
