"""Transform algebra: inverse, composition, quaternion round trips (incl. 180 degrees), sign canonicalisation."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.transforms import (
    interpolate_transform,
    invert_transform,
    make_transform,
    matrix_to_quat_xyzw,
    quat_xyzw_to_matrix,
    rotation_error_deg,
    transform_points,
    translation_error,
)


def random_transform(rng):
    return make_transform(Rotation.random(random_state=rng).as_matrix(), rng.uniform(-2, 2, 3))


def test_inverse_and_composition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        A, B = random_transform(rng), random_transform(rng)
        np.testing.assert_allclose(invert_transform(A) @ A, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(invert_transform(A @ B), invert_transform(B) @ invert_transform(A), atol=1e-12)
        pts = rng.normal(size=(5, 3))
        np.testing.assert_allclose(transform_points(A @ B, pts), transform_points(A, transform_points(B, pts)),
                                   atol=1e-12)


def test_transform_points_known_values_and_nan_rows():
    T = make_transform(Rotation.from_euler('z', 90, degrees=True).as_matrix(), [1.0, 0.0, 0.0])
    out = transform_points(T, [[1.0, 0.0, 0.0], [np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(out[0], [1.0, 1.0, 0.0], atol=1e-12)
    assert np.all(np.isnan(out[1]))  # a missing keypoint stays missing
    with pytest.raises(ValueError, match='infinite'):
        transform_points(T, [[np.inf, 0, 0]])
    with pytest.raises(ValueError, match=r'\(N, 3\)'):
        transform_points(T, [1.0, 2.0, 3.0])


def test_quaternion_round_trip_and_known_value():
    rng = np.random.default_rng(1)
    for R in Rotation.random(50, random_state=rng).as_matrix():
        q = matrix_to_quat_xyzw(R)
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(quat_xyzw_to_matrix(q), R, atol=1e-12)
    # 90 degrees about z is (0, 0, sin 45, cos 45) in ROS order (x, y, z, w).
    Rz = Rotation.from_euler('z', 90, degrees=True).as_matrix()
    np.testing.assert_allclose(matrix_to_quat_xyzw(Rz), [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)


@pytest.mark.parametrize('axis', [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, -1, 0], [-1, 2, -3]])
def test_half_turns_round_trip_with_canonical_sign(axis):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    R = Rotation.from_rotvec(np.pi * axis).as_matrix()
    q = matrix_to_quat_xyzw(R)
    assert q[3] == 0.0
    lead = q[np.flatnonzero(np.abs(q[:3]) > 1e-9)[0]]
    assert lead > 0  # deterministic sign when w is zero
    np.testing.assert_allclose(np.abs(q[:3]), np.abs(axis), atol=1e-9)
    np.testing.assert_allclose(quat_xyzw_to_matrix(q), R, atol=1e-12)
    # Both signs of the same rotation give the same canonical quaternion.
    np.testing.assert_allclose(matrix_to_quat_xyzw(quat_xyzw_to_matrix(-q)), q, atol=1e-12)


def test_negative_w_is_canonicalised():
    q = np.array([0.1, -0.2, 0.3, -0.9])
    q /= np.linalg.norm(q)
    np.testing.assert_allclose(matrix_to_quat_xyzw(quat_xyzw_to_matrix(q)), -q, atol=1e-12)


def test_errors_between_poses():
    A = make_transform(np.eye(3), [0, 0, 0])
    B = make_transform(Rotation.from_euler('x', 30, degrees=True).as_matrix(), [0.3, 0.4, 0.0])
    assert rotation_error_deg(A, B) == pytest.approx(30.0)
    assert rotation_error_deg(A[:3, :3], B[:3, :3]) == pytest.approx(30.0)
    assert translation_error(A, B) == pytest.approx(0.5)
    half = Rotation.from_euler('y', 180, degrees=True).as_matrix()
    assert rotation_error_deg(np.eye(3), half) == pytest.approx(180.0)


def test_interpolation_is_slerp_and_linear():
    A = make_transform(np.eye(3), [0, 0, 0])
    B = make_transform(Rotation.from_euler('z', 90, degrees=True).as_matrix(), [1, 2, 3])
    mid = interpolate_transform(A, B, 0.25)
    assert rotation_error_deg(mid, Rotation.from_euler('z', 22.5, degrees=True).as_matrix()) < 1e-9
    np.testing.assert_allclose(mid[:3, 3], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(interpolate_transform(A, B, 1.0), B, atol=1e-12)


@pytest.mark.parametrize('call, message', [
    (lambda: make_transform(np.eye(3) * 2, [0, 0, 0]), 'not a rotation'),
    (lambda: make_transform(np.diag([1.0, 1.0, -1.0]), [0, 0, 0]), 'not a rotation'),
    (lambda: make_transform(np.eye(3), [0, 0]), r'shape \(3,\)'),
    (lambda: make_transform(np.eye(3), [0, np.nan, 0]), 'NaN'),
    (lambda: invert_transform(np.ones((4, 4))), 'bottom row'),
    (lambda: invert_transform(np.eye(3)), r'shape \(4, 4\)'),
    (lambda: quat_xyzw_to_matrix([0, 0, 0, 2]), 'not normalised'),
    (lambda: quat_xyzw_to_matrix([0, 0, 0, 1, 0]), r'shape \(4,\)'),
    (lambda: rotation_error_deg(np.eye(2), np.eye(3)), r'\(3, 3\) rotation or a \(4, 4\)'),
    (lambda: interpolate_transform(np.eye(4), np.eye(4), 1.5), r'\[0, 1\]'),
])
def test_bad_input_is_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_slightly_denormalised_quaternion_is_accepted_and_normalised():
    R = quat_xyzw_to_matrix([0, 0, 0, 1.001])  # float32 round trips land here; tf2 accepts them too
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)
