"""Object pose from keypoints: exact and robust PnP, confidence gating, depth agreement and the depth correction
along the viewing ray, and the canonical pose of symmetric objects."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import make_transform, rotation_error_deg, transform_points, translation_error
from kp_pose_ros.objects.pose import ObjectPoseConfig, canonical_rotation, fit_object_pose

CAMERA = CameraModel.pinhole(640, 480, 600.0, 600.0, 320.0, 240.0)
K = CAMERA.K
HALF = np.array([0.04, 0.03, 0.02])  # a 8 x 6 x 4 cm box


def _pose(rng, distance=0.6):
    t = np.array([rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.06), distance])
    return make_transform(Rotation.random(random_state=rng).as_matrix(), t)


def _project(T, points):
    return CAMERA.project(transform_points(T, points))


def _box_keypoints():
    """Two keypoints on each face of the box, inside it (not on its silhouette's edges)."""
    points = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            for u, v in ((0.4, 0.3), (-0.3, -0.4)):
                p = np.zeros(3)
                p[[i for i in range(3) if i != axis]] = u, v
                p[axis] = sign
                points.append(p * HALF)
    return np.array(points)


def _box_surface(spacing):
    """Points on the box's six faces, ``spacing`` apart."""
    faces = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        u, v = np.meshgrid(np.arange(-HALF[a], HALF[a] + 1e-9, spacing), np.arange(-HALF[b], HALF[b] + 1e-9, spacing))
        for sign in (-1.0, 1.0):
            face = np.zeros((u.size, 3))
            face[:, a], face[:, b], face[:, axis] = u.ravel(), v.ravel(), sign * HALF[axis]
            faces.append(face)
    return np.concatenate(faces)


def _render_depth(T, background_m=1.0):
    """Depth image of the box at T in front of a wall: a z-buffer of densely splatted surface points."""
    depth = np.full((CAMERA.height, CAMERA.width), background_m)
    x = transform_points(T, _box_surface(0.0005))
    cols, rows, inside = CAMERA.pixel_indices(CAMERA.project(x))
    np.minimum.at(depth, (rows[inside], cols[inside]), x[inside, 2])
    return depth.astype(np.float32)


def _along_ray(T, shift_m):
    out = T.copy()
    out[:3, 3] *= 1.0 + shift_m / np.linalg.norm(T[:3, 3])
    return out


@pytest.mark.parametrize('seed', range(5))
def test_exact_keypoints_give_the_exact_pose(seed):
    rng = np.random.default_rng(seed)
    model = rng.uniform(-0.05, 0.05, size=(8, 3))
    T = _pose(rng, rng.uniform(0.4, 1.0))
    result = fit_object_pose(model, _project(T, model), np.full(8, 0.9), K)
    assert result.ok, result.message
    assert translation_error(result.T_cam_obj, T) < 1e-6
    assert math.radians(rotation_error_deg(result.T_cam_obj, T)) < 1e-6
    assert result.inliers.all() and result.inlier_ratio == 1.0
    assert result.reprojection_rms_px < 1e-6
    assert result.score == pytest.approx(0.9)
    assert math.isnan(result.depth_agreement)


@pytest.mark.parametrize('seed', range(5))
def test_confident_outliers_are_rejected(seed):
    rng = np.random.default_rng(10 + seed)
    model = rng.uniform(-0.05, 0.05, size=(8, 3))
    T = _pose(rng)
    pixels = _project(T, model)
    wrong = rng.choice(8, size=2, replace=False)
    pixels[wrong] += rng.uniform(40, 120, size=(2, 2)) * rng.choice([-1, 1], size=(2, 2))
    result = fit_object_pose(model, pixels, np.full(8, 0.95), K)
    assert result.ok, result.message
    assert translation_error(result.T_cam_obj, T) < 1e-3
    assert rotation_error_deg(result.T_cam_obj, T) < 0.1
    assert not result.inliers[wrong].any() and np.count_nonzero(result.inliers) == 6
    assert result.inlier_ratio == pytest.approx(0.75)


def test_low_confidence_keypoints_are_ignored():
    rng = np.random.default_rng(21)
    model = rng.uniform(-0.05, 0.05, size=(8, 3))
    T = _pose(rng)
    pixels = _project(T, model)
    pixels[[1, 5]] += 200.0
    confidence = np.array([0.8, 0.1, 0.9, 0.7, 0.6, 0.29, 0.9, 0.8])
    result = fit_object_pose(model, pixels, confidence, K)
    assert result.ok
    assert translation_error(result.T_cam_obj, T) < 1e-6
    assert result.inliers.tolist() == [True, False, True, True, True, False, True, True]
    assert result.score == pytest.approx(0.75 * np.mean(confidence[result.inliers]))


def test_too_few_confident_keypoints_give_no_pose():
    rng = np.random.default_rng(22)
    model = rng.uniform(-0.05, 0.05, size=(8, 3))
    pixels = _project(_pose(rng), model)
    pixels[6] = np.nan  # missing, even though confident
    result = fit_object_pose(model, pixels, [0.9, 0.9, 0.9, 0.2, 0.1, 0.0, 0.9, 0.05], K)
    assert not result.ok and result.T_cam_obj is None and result.score == 0.0
    assert 'only 3 of 8 keypoints have confidence >= 0.3' in result.message


def test_pose_behind_the_camera_is_rejected():
    rng = np.random.default_rng(23)
    model = rng.uniform(-0.05, 0.05, size=(8, 3)) + [0.0, 0.0, 1.0]  # keypoints a metre from the model's origin
    T = make_transform(np.eye(3), [0.02, -0.01, -0.45])  # keypoints 0.5 m in front, the origin behind the camera
    result = fit_object_pose(model, _project(T, model), np.full(8, 0.9), K)
    assert not result.ok and result.T_cam_obj is None
    assert 'behind the camera' in result.message


def test_inlier_threshold_grows_with_the_detection():
    config = ObjectPoseConfig()
    assert config.inlier_threshold_px(None) == 3.0
    assert config.inlier_threshold_px(100.0) == 3.0
    assert config.inlier_threshold_px(400.0) == pytest.approx(8.0)
    rng = np.random.default_rng(24)
    model = rng.uniform(-0.05, 0.05, size=(8, 3))
    pixels = _project(_pose(rng), model)
    pixels[2] += [4.0, 3.0]  # 5 px off
    assert not fit_object_pose(model, pixels, np.ones(8), K).inliers[2]
    assert fit_object_pose(model, pixels, np.ones(8), K, side_px=400.0).inliers[2]


@pytest.mark.parametrize('seed', range(4))
def test_depth_moves_a_pose_that_is_off_along_the_ray_back(seed):
    rng = np.random.default_rng(30 + seed)
    T = _pose(rng)
    depth = _render_depth(T)
    keypoints = _box_keypoints()
    points = _box_surface(0.002)
    points = points[rng.choice(len(points), size=1000, replace=False)]
    shift = 0.02 if seed % 2 else -0.02
    pixels = _project(_along_ray(T, shift), keypoints)  # exact keypoints of a pose 2 cm off along the ray
    without = fit_object_pose(keypoints, pixels, np.ones(12), K)
    assert translation_error(without.T_cam_obj, T) == pytest.approx(0.02, abs=1e-4)
    result = fit_object_pose(keypoints, pixels, np.ones(12), K, depth_m=depth, model_points=points)
    assert result.ok, result.message
    assert translation_error(result.T_cam_obj, T) < 0.002, result.message
    assert rotation_error_deg(result.T_cam_obj, T) < 1e-6  # the rotation PnP found is kept
    assert result.depth_correction_m == pytest.approx(-shift, abs=0.002)
    assert result.depth_agreement > 0.9
    assert result.score == pytest.approx(result.depth_agreement)
    # Keypoints alone (on the surface, half of them on the far side) correct it too, from fewer points.
    coarse = fit_object_pose(keypoints, pixels, np.ones(12), K, depth_m=depth)
    assert translation_error(coarse.T_cam_obj, T) < 0.01, coarse.message


def test_depth_agreement_tells_the_right_pose_from_a_wrong_one():
    rng = np.random.default_rng(40)
    T = _pose(rng)
    depth = _render_depth(T)
    depth[::7, ::5] = np.nan  # holes are not evidence either way
    keypoints = _box_keypoints()
    points = _box_surface(0.002)
    config = ObjectPoseConfig(refine_with_depth=False)
    right = fit_object_pose(keypoints, _project(T, keypoints), np.ones(12), K, config, depth, points)
    assert right.depth_agreement > 0.95 and right.score > 0.95
    assert right.depth_correction_m == 0.0
    # Turned about its centre, much of a small box's visible surface stays within the 1 cm tolerance (about 0.6 of
    # it for 40 deg about x); a quarter turn that brings the long side to the front leaves much less.
    turned = T @ make_transform(Rotation.from_euler('y', 90, degrees=True).as_matrix(), np.zeros(3))
    wrong = fit_object_pose(keypoints, _project(turned, keypoints), np.ones(12), K, config, depth, points)
    assert wrong.ok and wrong.depth_agreement < 0.5
    assert wrong.score < 0.5
    off = fit_object_pose(keypoints, _project(_along_ray(T, 0.03), keypoints), np.ones(12), K, config, depth, points)
    assert off.depth_agreement < 0.1


def test_depth_that_does_not_show_the_object_changes_nothing():
    rng = np.random.default_rng(41)
    T = _pose(rng)
    keypoints = _box_keypoints()
    wall = np.full((480, 640), 1.0, np.float32)  # the object is not in the depth at all
    result = fit_object_pose(keypoints, _project(T, keypoints), np.ones(12), K, depth_m=wall,
                             model_points=_box_surface(0.002))
    assert result.ok
    assert translation_error(result.T_cam_obj, T) < 1e-6
    assert result.depth_correction_m == 0.0 and 'depth not used' in result.message
    assert result.depth_agreement == 0.0 and result.score == 0.0
    holes = fit_object_pose(keypoints, _project(T, keypoints), np.ones(12), K, depth_m=np.zeros((480, 640), np.float32))
    assert math.isnan(holes.depth_agreement) and holes.score == pytest.approx(1.0)


def _rz(angle):
    return make_transform(Rotation.from_euler('z', angle).as_matrix(), np.zeros(3))


def test_canonical_rotation_of_a_continuous_z_symmetry():
    steps = 360
    symmetries = np.array([_rz(2 * math.pi * k / steps) for k in range(steps)])
    rng = np.random.default_rng(50)
    T = _pose(rng)
    canonical = canonical_rotation(T, symmetries)
    np.testing.assert_allclose(canonical_rotation(T @ _rz(2 * math.pi * 37 / steps), symmetries), canonical,
                               atol=1e-9)
    turned = canonical_rotation(T @ _rz(1.2345), symmetries)
    assert rotation_error_deg(turned, canonical) <= 0.5 + 1e-9  # half a discretisation step
    np.testing.assert_allclose(turned[:3, 3], T[:3, 3])
    # It is the member of the family closest to the camera's axes.
    family = T @ symmetries
    angles = [rotation_error_deg(np.eye(3), f[:3, :3]) for f in family]
    assert rotation_error_deg(np.eye(3), canonical[:3, :3]) == pytest.approx(min(angles))


def test_canonical_rotation_follows_a_reference():
    flip = make_transform(Rotation.from_euler('x', math.pi).as_matrix(), [0.0, 0.0, 0.01])  # a 2-fold symmetry
    symmetries = np.array([np.eye(4), flip])
    rng = np.random.default_rng(51)
    T = _pose(rng)
    assert np.allclose(canonical_rotation(T @ flip, symmetries, reference=T), T)
    assert np.allclose(canonical_rotation(T, symmetries, reference=T @ flip), T @ flip)
    assert np.allclose(canonical_rotation(T, symmetries, reference=(T @ flip)[:3, :3]), T @ flip)
    assert np.allclose(canonical_rotation(T, np.zeros((0, 4, 4))), T)
