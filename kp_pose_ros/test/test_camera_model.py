"""CameraModel: projection with distortion, its inverse (undistortion / NCCS), missing keypoints, bad calibrations."""
import dataclasses
import math

import numpy as np
import pytest

from kp_pose_ros.core.camera import CameraModel, CameraModelError

# Realistic calibrations: a RealSense D435 colour stream (Brown-Conrady, small k1, k2), an Azure Kinect colour camera
# (rational polynomial, large coefficients), a wide-angle barrel lens whose corners need many undistortion iterations
# (OpenCV 4's default of 5 leaves ~1 px there) and a RealSense T265 fisheye (Kannala-Brandt / equidistant).
REALSENSE = CameraModel(640, 480, [[615.3, 0, 322.4], [0, 615.9, 241.7], [0, 0, 1]],
                        [0.1, -0.25, 0.0012, -0.0008, 0.11], 'plumb_bob')
AZURE = CameraModel(1280, 720, [[605.8, 0, 638.2], [0, 605.6, 364.9], [0, 0, 1]],
                    [0.52, -2.65, 0.0006, -0.0003, 1.52, 0.40, -2.48, 1.45], 'rational_polynomial')
WIDE = CameraModel(1280, 720, [[605.8, 0, 638.2], [0, 605.6, 364.9], [0, 0, 1]], [-0.28, 0.07, 0.0, 0.0, 0.0])
FISHEYE = CameraModel(848, 800, [[285.7, 0, 420.1], [0, 285.8, 404.6], [0, 0, 1]],
                      [-0.0061, 0.0418, -0.0386, 0.0067], 'equidistant')


def ideal_grid(model, margin=0.05, n=9):
    """Camera-frame points at random depths whose ideal (undistorted) pixels cover the image, corners included."""
    u, v = np.meshgrid(np.linspace(margin, 1 - margin, n) * (model.width - 1),
                       np.linspace(margin, 1 - margin, n) * (model.height - 1))
    ideal = np.column_stack([u.ravel(), v.ravel()])
    z = np.random.default_rng(1).uniform(0.3, 4.0, len(ideal))
    xy = (ideal - [model.cx, model.cy]) / [model.fx, model.fy]
    return np.column_stack([xy * z[:, None], z]), xy, ideal


def brown_conrady(model, points):
    """OpenCV's radial-tangential model written out, to check project() against something other than OpenCV."""
    k1, k2, p1, p2, k3 = model.D[:5]
    x, y = points[:, 0] / points[:, 2], points[:, 1] / points[:, 2]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.column_stack([model.fx * xd + model.cx, model.fy * yd + model.cy])


def kannala_brandt(model, points):
    k1, k2, k3, k4 = model.D
    r = np.hypot(points[:, 0], points[:, 1])
    theta = np.arctan2(r, points[:, 2])
    theta_d = theta * (1 + k1 * theta ** 2 + k2 * theta ** 4 + k3 * theta ** 6 + k4 * theta ** 8)
    scale = theta_d / r
    return np.column_stack([model.fx * points[:, 0] * scale + model.cx, model.fy * points[:, 1] * scale + model.cy])


@pytest.mark.parametrize('model, reference', [(REALSENSE, brown_conrady), (FISHEYE, kannala_brandt)])
def test_project_applies_the_published_distortion(model, reference):
    points, _, ideal = ideal_grid(model)
    pixels = model.project(points)
    np.testing.assert_allclose(pixels, reference(model, points), atol=1e-6)
    assert np.abs(pixels - ideal).max() > 1.0, 'the distortion must actually move corner pixels'


@pytest.mark.parametrize('model', [REALSENSE, AZURE, WIDE, FISHEYE],
                         ids=['plumb_bob', 'rational_polynomial', 'wide_plumb_bob', 'equidistant'])
def test_undistort_and_normalize_invert_project(model):
    points, xy, ideal = ideal_grid(model)
    distorted = model.project(points)
    assert np.abs(distorted - ideal).max() > 1.0, 'otherwise the test proves nothing'
    np.testing.assert_allclose(model.undistort_pixels(distorted), ideal, rtol=0, atol=1e-3)
    np.testing.assert_allclose(model.normalize(distorted), xy, rtol=0, atol=1e-3 / model.fx)


def test_nccs_is_x_over_z_for_a_pinhole_camera():
    model = CameraModel.pinhole(640, 480, 500.0, 510.0, 300.0, 250.0)
    points = np.array([[0.1, -0.2, 2.0], [-0.3, 0.05, 0.7]])
    pixels = model.project(points)
    np.testing.assert_allclose(pixels, [[325.0, 199.0], [300 - 150 / 0.7, 250 + 25.5 / 0.7]])
    np.testing.assert_allclose(model.normalize(pixels), points[:, :2] / points[:, 2:])
    np.testing.assert_allclose(model.undistort_pixels(pixels), pixels)


def test_same_points_same_nccs_under_different_intrinsics():
    """The property RoboKeyGen relies on: NCCS coordinates of a scene do not depend on the camera."""
    points, xy, _ = ideal_grid(REALSENSE)
    for model in (REALSENSE, AZURE, CameraModel.from_fov(320, 240, 90.0)):
        np.testing.assert_allclose(model.normalize(model.project(points)), xy, atol=1e-6)


@pytest.mark.parametrize('width, height, hfov', [(640, 480, 69.4), (1280, 720, 90.0), (848, 480, 87.0), (64, 64, 10.0)])
def test_from_fov_round_trip(width, height, hfov):
    model = CameraModel.from_fov(width, height, hfov)
    assert model.hfov_deg == pytest.approx(hfov, abs=1e-9)
    assert model.fx == model.fy and (model.cx, model.cy) == ((width - 1) / 2, (height - 1) / 2)
    assert model.vfov_deg == pytest.approx(2 * math.degrees(math.atan(height / 2 / model.fy)), abs=1e-9)
    # The ray at half the field of view meets the left edge of pixel 0, i.e. u = -0.5.
    edge = model.project([[-math.tan(math.radians(hfov / 2)), 0.0, 1.0]])
    np.testing.assert_allclose(edge, [[-0.5, model.cy]], atol=1e-9)


def test_realsense_field_of_view():
    assert REALSENSE.hfov_deg == pytest.approx(54.95, abs=0.01)
    assert REALSENSE.vfov_deg == pytest.approx(42.58, abs=0.01)


@pytest.mark.parametrize('model', [REALSENSE, AZURE, FISHEYE, CameraModel.from_fov(640, 480, 60.0)],
                         ids=['plumb_bob', 'rational_polynomial', 'equidistant', 'pinhole'])
def test_missing_rows_stay_missing_without_touching_the_others(model):
    points, _, _ = ideal_grid(model, n=3)
    bad = points.copy()
    bad[1] = np.nan
    bad[3, 0] = np.inf
    bad[4, 2] = 0.0
    bad[6, 2] = -1.0
    invalid = np.zeros(len(points), bool)
    invalid[[1, 3, 4, 6]] = True
    pixels = model.project(bad)
    assert np.isnan(pixels[invalid]).all()
    np.testing.assert_array_equal(pixels[~invalid], model.project(points[~invalid]))

    holes = model.project(points)
    holes[[0, 5]] = np.nan
    holes[7, 1] = np.inf
    missing = np.isin(np.arange(len(points)), [0, 5, 7])
    for method in (model.normalize, model.undistort_pixels):
        out = method(holes)
        assert out.shape == holes.shape and np.isnan(out[missing]).all()
        np.testing.assert_array_equal(out[~missing], method(holes[~missing]))


@pytest.mark.parametrize('model', [REALSENSE, FISHEYE])
def test_all_missing_or_empty_input(model):
    assert model.project(np.zeros((0, 3))).shape == (0, 2)
    assert model.normalize(np.zeros((0, 2))).shape == (0, 2)
    assert np.isnan(model.normalize(np.full((3, 2), np.nan))).all()
    assert np.isnan(model.project([[0.0, 0.0, -1.0]])).all()


def test_wrong_point_shapes_are_refused():
    with pytest.raises(CameraModelError, match=r'points_cam must be an \(N, 3\) array, got shape \(3,\)'):
        REALSENSE.project([0.0, 0.0, 1.0])
    with pytest.raises(CameraModelError, match=r'pixels must be an \(N, 2\) array, got shape \(4, 3\)'):
        REALSENSE.normalize(np.zeros((4, 3)))


def test_zero_or_missing_distortion_means_pinhole():
    K = [[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]
    pinhole = CameraModel(640, 480, K)
    points = np.array([[0.4, 0.3, 1.0]])
    for model in (CameraModel(640, 480, K, [], 'plumb_bob'), CameraModel(640, 480, K, np.zeros(5), 'plumb_bob'),
                  CameraModel(640, 480, K, np.zeros(4), 'equidistant'), CameraModel(640, 480, K, [], '')):
        assert not model.has_distortion
        np.testing.assert_array_equal(model.project(points), pinhole.project(points))


def test_short_polynomial_d_is_padded_internally_but_kept_as_given():
    five = REALSENSE
    eight = CameraModel(640, 480, five.K, np.r_[five.D, 0, 0, 0], 'rational_polynomial')
    four = CameraModel(640, 480, five.K, [0.1, -0.25, 0.0012, -0.0008], 'plumb_bob')
    six = CameraModel(640, 480, five.K, [0.1, -0.25, 0.0012, -0.0008, 0.0, 0.0], 'rational_polynomial')
    points, _, _ = ideal_grid(five, n=4)
    np.testing.assert_allclose(eight.project(points), five.project(points), atol=1e-9)
    np.testing.assert_allclose(six.project(points), four.project(points), atol=1e-9)
    assert five.D.shape == (5,) and six.D.shape == (6,)


def test_model_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        REALSENSE.width = 10
    with pytest.raises(ValueError):
        REALSENSE.K[0, 0] = 1.0
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    model = CameraModel(640, 480, K)
    K[0, 0] = 1.0
    assert model.fx == 500.0


@pytest.mark.parametrize('kwargs, message', [
    (dict(K=np.zeros((3, 3))), r'focal lengths must be > 0, got fx=0.0 fy=0.0'),
    (dict(K=[[500, 0, 320], [0, -500, 240], [0, 0, 1]]), 'focal lengths must be > 0'),
    (dict(K=[[500, 0, 320], [0, 500, 240], [0, 0, 1], [0, 0, 0]]), 'K must be a finite 3x3 matrix'),
    (dict(K=[[500, 0, np.nan], [0, 500, 240], [0, 0, 1]]), 'K must be a finite 3x3 matrix'),
    (dict(K=[[500, 2, 320], [0, 500, 240], [0, 0, 1]]), r'K must be \[\[fx, 0, cx\], \[0, fy, cy\], \[0, 0, 1\]\]'),
    (dict(D=[0.1, 0.2, 0.0]), 'plumb_bob distortion needs 4 to 14 coefficients'),
    (dict(D=np.full(15, 0.01), distortion_model='rational_polynomial'), 'needs 4 to 14 coefficients.*got 15'),
    (dict(D=[0.1, 0.0, 0.0, 0.0, 0.0], distortion_model='equidistant'), 'equidistant distortion needs 4 coefficients'),
    (dict(D=[0.1, 0.0, 0.0, 0.0, 0.0], distortion_model='kannala_brandt'),
     r"unknown distortion model 'kannala_brandt'; supported: plumb_bob, rational_polynomial, equidistant"),
    (dict(D=[0.1, 0.0, 0.0, 0.0, 0.0], distortion_model=''), "unknown distortion model ''"),
    (dict(D=[0.1, np.inf, 0.0, 0.0, 0.0]), 'distortion coefficients must be finite'),
    (dict(width=0), 'image size must be positive, got 0x480'),
    (dict(height=-480), 'image size must be positive'),
    (dict(width=640.5), 'image size must be integers'),
])
def test_invalid_calibrations_are_refused(kwargs, message):
    args = dict(width=640, height=480, K=[[500, 0, 320], [0, 500, 240], [0, 0, 1]], D=[], distortion_model='plumb_bob')
    args.update(kwargs)
    with pytest.raises(CameraModelError, match=message):
        CameraModel(**args)


@pytest.mark.parametrize('hfov', [0.0, 180.0, -10.0, float('nan')])
def test_from_fov_refuses_impossible_angles(hfov):
    with pytest.raises(CameraModelError, match='field of view must be in'):
        CameraModel.from_fov(640, 480, hfov)
    with pytest.raises(CameraModelError, match='image size must be positive'):
        CameraModel.from_fov(0, 480, 60.0)


def test_pixel_indices_round_to_the_nearest_pixel_and_say_which_are_inside():
    camera = CameraModel.pinhole(640, 480, 500.0, 500.0, 320.0, 240.0)
    cols, rows, inside = camera.pixel_indices([[0.4, 0.6], [639.4, 479.49], [639.6, 10.0], [-0.6, 5.0],
                                               [np.nan, np.nan]])
    assert cols[:2].tolist() == [0, 639] and rows[:2].tolist() == [1, 479]
    assert inside.tolist() == [True, True, False, False, False]
