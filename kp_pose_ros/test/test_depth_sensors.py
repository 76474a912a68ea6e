"""Depth sensor models reproduce the datasheet laws they claim, on synthetic scenes whose exact answer is known."""
import dataclasses
import math
import time
import warnings

import numpy as np
import pytest
from scipy import ndimage

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.sim import depth_sensors as ds
from kp_pose_ros.sim.camera_presets import PRESET_NAMES, preset
from kp_pose_ros.sim.depth_sensors import InvalidReason as R

CAM = CameraModel.pinhole(640, 480, 600.0, 600.0, 319.5, 239.5)
D435 = ds.depth_model_for_preset('realsense_d435')
KINECT1 = ds.depth_model_for_preset('kinect_xbox360')
NFOV = ds.depth_model_for_preset('azure_kinect_nfov')
WFOV = ds.depth_model_for_preset('azure_kinect_wfov')
# Box scene: a 100x100 px foreground square at 1 m in front of a plane at 2 m.
BOX_ROWS, BOX_COLS = slice(200, 300), slice(300, 400)


def rng(seed=0):
    return np.random.default_rng(seed)


def plane(z0, tilt_deg=0.0, cam=CAM):
    """Plane through (0, 0, z0) whose normal is tilted by tilt_deg about y: the incidence angle at the centre."""
    a = math.radians(tilt_deg)
    x = (np.arange(cam.width) - cam.cx) / cam.fx
    denom = x * math.sin(a) + math.cos(a)
    with np.errstate(divide='ignore'):
        row = np.where(denom > 1e-3, z0 * math.cos(a) / denom, np.nan)
    return np.repeat(row[None, :], cam.height, axis=0).astype(np.float32)


def crease(z0, concave, cam=CAM):
    """Two 45 deg walls meeting in a vertical crease at x = 0, z0: concave (inside corner) or convex (outside)."""
    x = (np.arange(cam.width) - cam.cx) / cam.fx
    a = math.radians(45.0)
    left = z0 * math.cos(a) / (x * math.sin(a) + math.cos(a))
    right = z0 * math.cos(a) / (-x * math.sin(a) + math.cos(a))
    row = np.minimum(left, right) if concave else np.maximum(left, right)
    return np.repeat(row[None, :], cam.height, axis=0).astype(np.float32)


def box_scene():
    depth = np.full((CAM.height, CAM.width), 2.0, np.float32)
    depth[BOX_ROWS, BOX_COLS] = 1.0
    return depth


def grey(value, cam=CAM):
    return np.full((cam.height, cam.width, 3), value, np.uint8)


def errors(model, z0, seed=0, **kwargs):
    depth = plane(z0)
    sample = model.apply(depth, CAM, rng(seed), **kwargs)
    ok = sample.valid
    return sample.depth_m[ok].astype(np.float64) - depth[ok], ok


# --------------------------------------------------------------------------- stereo
@pytest.mark.parametrize('name', ['realsense_d435', 'realsense_d415'])
@pytest.mark.parametrize('z0', [1.0, 2.0, 3.5])
def test_stereo_noise_follows_the_z_squared_law(name, z0):
    model = ds.depth_model_for_preset(name)
    err, ok = errors(model, z0)
    assert ok.mean() > 0.99
    expected = float(model.noise_std_m(z0))
    assert expected == pytest.approx(z0 ** 2 * model.subpixel_rms_px / (model.focal_px * model.baseline_m))
    assert err.std() == pytest.approx(expected, rel=0.10)
    assert abs(err.mean()) < 0.1 * expected + 0.001   # (the median snaps to a disparity step)


def test_kinect_v1_noise_includes_its_coarse_disparity_steps():
    # 1/8 px steps are coarser than the 0.07 px matching noise: the quantisation adds (1/8)^2 / 12 px^2.
    for z0 in (1.5, 3.0):
        err, _ = errors(KINECT1, z0)
        sigma_d = math.sqrt(KINECT1.subpixel_rms_px ** 2 + (1 / KINECT1.subpixel_steps) ** 2 / 12)
        assert err.std() == pytest.approx(z0 ** 2 * sigma_d / (580.0 * 0.075), rel=0.15)
    assert err.std() > 1.1 * KINECT1.noise_std_m(3.0)


@pytest.mark.parametrize('bias', [-0.015, 0.01])
def test_stereo_median_ratio_is_the_units_scale_bias(bias):
    model = dataclasses.replace(D435, scale_bias=bias)
    for z0 in (0.8, 2.0):
        depth = plane(z0)
        out = model.apply(depth, CAM, rng())
        assert np.median(out.depth_m[out.valid] / depth[out.valid]) == pytest.approx(1 + bias, abs=0.001)


def test_sample_unit_draws_constants_within_the_datasheet_bounds():
    units = [D435.sample_unit(rng(seed)) for seed in range(50)]
    biases = np.array([u.scale_bias for u in units])
    assert np.abs(biases).max() <= 0.02 and biases.std() > 0.005
    assert D435.sample_unit(rng(3)) == D435.sample_unit(rng(3))
    assert all(u.misregistration is not None for u in units) and D435.misregistration is None
    tof = [NFOV.sample_unit(rng(seed)) for seed in range(50)]
    assert max(abs(u.offset_m) for u in tof) <= 0.011 and max(abs(u.scale_bias) for u in tof) <= 0.001


def test_depth_is_quantised_to_millimetres_and_disparity_steps():
    depth = plane(0.7, tilt_deg=40.0)
    out = D435.apply(depth, CAM, rng())
    mm = out.depth_m[out.valid].astype(np.float64) * 1000.0
    np.testing.assert_allclose(mm, np.rint(mm), atol=1e-3)
    steps = np.diff(np.unique(np.rint(mm)))
    assert steps.min() == 1.0 and np.median(steps) == 1.0   # at 0.7 m a 1/32 px step is 0.7 mm < the depth unit
    # Kinect v1 at 3.5 m: disparity steps of 1/8 px are ~3.5 cm apart, far coarser than the 1 mm unit.
    far = KINECT1.apply(plane(3.5), CAM, rng())
    z = far.depth_m[far.valid].astype(np.float64)
    disparity_steps = 580.0 * 0.075 / z * 8
    np.testing.assert_allclose(disparity_steps, np.rint(disparity_steps), atol=0.03)   # mm rounding: 0.015
    assert np.unique(z).size < 40


def test_dark_surfaces_lose_pixels_at_the_configured_rate_and_bright_ones_do_not():
    rgb = grey(200)
    rgb[:, :320] = 20           # linear albedo ~0.007, below the 0.04 threshold
    for rate in (0.5, 0.2):
        model = dataclasses.replace(D435, dark_hole_rate=rate)
        out = model.apply(plane(1.5), CAM, rng(), rgb=rgb)
        dark = out.invalid_reason[:, :320] == R.DARK
        assert dark.mean() == pytest.approx(rate, abs=0.05)
        assert (out.invalid_reason[:, 320:] == R.DARK).sum() == 0
        assert np.isnan(out.depth_m[out.invalid_reason == R.DARK]).all()
    # Holes come in blobs: a hole's neighbour is a hole far more often than the rate.
    assert (dark[:, 1:] & dark[:, :-1]).sum() / dark.sum() > 0.5


def test_specular_highlights_lose_pixels():
    rgb = grey(120)
    rgb[100:200, 100:200] = 255
    out = D435.apply(plane(1.5), CAM, rng(), rgb=rgb)
    spec = out.invalid_reason == R.SPECULAR
    assert spec[100:200, 100:200].mean() == pytest.approx(0.9, abs=0.05)
    assert spec.sum() == spec[100:200, 100:200].sum()


@pytest.mark.parametrize('model', [D435, NFOV], ids=['stereo', 'tof'])
def test_grazing_surfaces_lose_pixels(model):
    centre = (slice(100, 380), slice(300, 340))
    steep = model.apply(plane(1.5, tilt_deg=model.max_incidence_deg + 4), CAM, rng())
    assert (steep.invalid_reason[centre] == R.GRAZING).mean() > 0.97
    mild = model.apply(plane(1.5, tilt_deg=model.max_incidence_deg - 8), CAM, rng())
    assert (mild.invalid_reason[centre] == R.GRAZING).sum() == 0
    assert mild.valid[centre].mean() > 0.99
    cos = ds.incidence_cos(plane(1.5, tilt_deg=60.0), CAM)
    assert math.degrees(math.acos(cos[240, 320])) == pytest.approx(60.0, abs=0.2)


@pytest.mark.parametrize('model', [D435, KINECT1], ids=['d435', 'kinect_v1'])
def test_occlusion_shadow_lies_left_of_the_foreground_with_the_disparity_width(model):
    out = model.apply(box_scene(), CAM, rng())
    shadow = out.invalid_reason == R.OCCLUSION_SHADOW
    width = CAM.fx * model.baseline_m * (1 / 1.0 - 1 / 2.0)       # 15 px (D435), 22.5 px (Kinect v1)
    rows = range(205, 295)
    widths = np.array([shadow[r].sum() for r in rows])
    assert np.abs(widths - width).max() <= 1.0
    for r in rows:
        cols = np.flatnonzero(shadow[r])
        assert cols.max() == 299 and cols.min() >= 300 - width - 1   # the band ends at the box's left edge
    assert shadow[:, 300:].sum() == 0 and shadow[:195].sum() == 0 and shadow[305:].sum() == 0


def test_flying_pixels_only_near_depth_edges_and_between_the_surfaces():
    model = dataclasses.replace(D435, flying_rate=1.0)
    truth = box_scene()
    out = model.apply(truth, CAM, rng())
    ok = out.valid
    err = np.where(ok, out.depth_m - truth, 0.0)
    outliers = ok & (np.abs(err) > 6 * model.noise_std_m(truth))
    edges = np.zeros(truth.shape, bool)
    edges[:, 1:] |= truth[:, 1:] != truth[:, :-1]
    edges[:, :-1] |= truth[:, 1:] != truth[:, :-1]
    edges[1:] |= truth[1:] != truth[:-1]
    edges[:-1] |= truth[1:] != truth[:-1]
    near_edge = ndimage.binary_dilation(edges, np.ones((3, 3), bool), iterations=model.flying_band_px + 1)
    assert outliers.sum() > 100
    assert not (outliers & ~near_edge).any()
    values = out.depth_m[outliers]
    assert values.min() > 1.0 - 6 * model.noise_std_m(1.0) and values.max() < 2.0 + 6 * model.noise_std_m(2.0)
    # Mixed depths, not just the other surface: a good share lies well inside (1.1, 1.9) m.
    assert ((values > 1.1) & (values < 1.9)).sum() > 0.3 * values.size


# --------------------------------------------------------------------------- time of flight
def test_tof_range_limits_per_mode():
    for model, inside, outside in ((NFOV, (0.55, 3.8), (0.45, 3.95)), (WFOV, (0.3, 2.8), (0.2, 2.95))):
        for z0 in inside:
            assert model.apply(plane(z0), CAM, rng()).valid.mean() > 0.99
        for z0 in outside:
            out = model.apply(plane(z0), CAM, rng())
            assert (out.invalid_reason == R.OUT_OF_RANGE).all() and np.isnan(out.depth_m).all()


def test_tof_dark_surfaces_drop_out_more_at_range():
    dark, bright = grey(89), grey(230)          # linear albedo 0.10 and 0.79
    near = NFOV.apply(plane(1.0), CAM, rng(), rgb=dark)
    far = NFOV.apply(plane(3.7), CAM, rng(), rgb=dark)
    signal = (0.0999 / 3.7 ** 2) / (0.15 / 3.86 ** 2)
    assert (near.invalid_reason == R.DARK).mean() < 0.001
    assert (far.invalid_reason == R.DARK).mean() == pytest.approx((1 - signal) / 0.5, abs=0.03)
    assert (NFOV.apply(plane(3.7), CAM, rng(), rgb=bright).invalid_reason == R.DARK).sum() == 0


@pytest.mark.parametrize('z0', [1.0, 2.0, 3.5])
def test_tof_noise_follows_its_signal_law(z0):
    err, _ = errors(NFOV, z0)
    assert err.std() == pytest.approx(float(NFOV.noise_std_m(z0)), rel=0.10)
    err_dark, _ = errors(NFOV, z0, rgb=grey(120))   # albedo 0.19: std x sqrt(0.5 / 0.19)
    assert err_dark.std() == pytest.approx(float(NFOV.noise_std_m(z0, 0.1878)), rel=0.10)
    assert float(NFOV.noise_std_m(3.86, 0.15)) == pytest.approx(0.017)   # the specification's worst case


def test_tof_systematic_error_is_the_units_offset_and_scale():
    model = dataclasses.replace(NFOV, offset_m=0.008, scale_bias=0.001)
    for z0 in (1.0, 3.0):
        err, _ = errors(model, z0)
        assert np.median(err) == pytest.approx(0.008 + 0.001 * z0, abs=0.0006)


def test_tof_multipath_biases_concave_creases_long():
    concave, convex = crease(1.0, concave=True), crease(1.0, concave=False)
    mid, flat = slice(318, 322), np.r_[100:200, 440:540]
    bias = NFOV.multipath_bias_m(concave)
    assert 0.004 < bias[240, mid].min() and 0.008 < bias[240, 319:321].min() and bias.max() <= NFOV.multipath_max_m
    assert np.abs(bias[:, flat]).max() < 1e-4 and np.abs(NFOV.multipath_bias_m(convex)).max() < 1e-6
    assert np.abs(NFOV.multipath_bias_m(box_scene())).max() == 0.0   # occluding edges are not creases
    out = NFOV.apply(concave, CAM, rng())
    err = out.depth_m - concave
    assert np.nanmedian(err[:, mid]) > 0.005
    assert abs(np.nanmedian(err[:, flat])) < 0.001


def test_tof_invalidates_mixed_pixels_at_depth_edges():
    out = NFOV.apply(box_scene(), CAM, rng())
    edge = out.invalid_reason == R.EDGE
    assert edge[250, [299, 300, 399, 400]].all() and edge[[199, 200, 299, 300], 350].all()
    assert edge[250].sum() == 4 and edge.sum() == 8 * 100 - 4   # both sides of four 100 px edges; corners shared
    assert out.valid[250, 301:399].all() and out.valid[250, :299].all()


# --------------------------------------------------------------------------- misregistration
def test_misregistration_shifts_edges_by_the_expected_pixels():
    truth = box_scene()
    sample = ds.DepthSample(truth, np.zeros(truth.shape, np.uint8))
    # 5 mm along x: the box at 1 m moves 600 * 0.005 / 1 = 3 px right, the background at 2 m 1.5 px.
    moved = ds.Misregistration(translation_m=(0.005, 0.0, 0.0)).apply(sample, CAM)
    row = moved.depth_m[250]
    assert np.flatnonzero(row == 1.0)[[0, -1]].tolist() == [303, 402]
    # Left of the box the background moves less than the box: the uncovered px (300.5 to 303) are holes.
    assert (moved.invalid_reason[250, 301:303] == R.NO_RETURN).all() and row[300] == 2.0
    # 0.3 deg about y: everything moves ~ f tan(0.3 deg) = 3.1 px right, whatever its depth; the left border empties.
    turned = ds.Misregistration(rotation_deg=(0.0, 0.3, 0.0)).apply(sample, CAM)
    assert np.flatnonzero(turned.depth_m[250] == 1.0)[[0, -1]].tolist() == [303, 402]
    assert (turned.invalid_reason[:, :3] == R.NO_RETURN).all() and turned.valid[:, 4:].mean() > 0.995
    du, dv = ds.Misregistration(rotation_deg=(0.0, 0.3, 0.0)).pixel_shift(truth, CAM)
    assert du[240, 320] == pytest.approx(600 * math.tan(math.radians(0.3)), abs=0.01)
    assert abs(dv[240, 320]) < 0.01
    # A model carrying a misregistration applies it after its own artefacts.
    tof = dataclasses.replace(NFOV, misregistration=ds.Misregistration(translation_m=(0.005, 0.0, 0.0)))
    out = tof.apply(truth, CAM, rng())
    assert np.flatnonzero(np.abs(out.depth_m[250] - 1.0) < 0.05)[[0, -1]].tolist() == [304, 401]


# --------------------------------------------------------------------------- contracts
ALL_MODELS = [ds.IdealDepthModel(), ds.gaussian(0.002), D435, D435.sample_unit(rng(1)), KINECT1, NFOV,
              NFOV.sample_unit(rng(2)), WFOV]


@pytest.mark.parametrize('model', ALL_MODELS, ids=lambda m: type(m).__name__)
def test_same_seed_same_frame(model):
    depth, rgb = box_scene(), grey(30)
    rgb[:, 320:] = 200
    a, b = (model.apply(depth, CAM, rng(7), rgb=rgb) for _ in range(2))
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    np.testing.assert_array_equal(a.invalid_reason, b.invalid_reason)
    assert a.depth_m.dtype == np.float32 and a.invalid_reason.dtype == np.uint8
    assert np.isnan(a.depth_m[~a.valid]).all() and np.isfinite(a.depth_m[a.valid]).all()
    if not isinstance(model, ds.IdealDepthModel):
        assert not np.array_equal(a.depth_m, model.apply(depth, CAM, rng(8), rgb=rgb).depth_m, equal_nan=True)


def test_gaussian_model_reproduces_the_scenes_draw():
    depth = box_scene()
    depth[:10] = np.nan
    expected = depth.copy()
    expected += (rng(5).standard_normal(depth.shape) * 0.003 * depth ** 2).astype(np.float32)
    np.testing.assert_array_equal(ds.gaussian(0.003).apply(depth, CAM, rng(5)).depth_m, expected)
    np.testing.assert_array_equal(ds.gaussian(0.0).apply(depth, CAM, rng(5)).depth_m, depth)


@pytest.mark.parametrize('model', ALL_MODELS, ids=lambda m: type(m).__name__)
def test_bad_input_is_refused_and_empty_input_is_all_invalid(model):
    depth = box_scene()
    with pytest.raises(ValueError, match='shape'):
        model.apply(depth[:, :-1], CAM, rng())
    with pytest.raises(ValueError, match='shape'):
        model.apply(depth[..., None], CAM, rng())
    with pytest.raises(ValueError, match='16UC1'):
        model.apply((depth * 1000).astype(np.uint16), CAM, rng())
    with pytest.raises(ValueError, match='rgb'):
        model.apply(depth, CAM, rng(), rgb=grey(10)[..., :2])
    with pytest.raises(ValueError, match='rgb'):
        model.apply(depth, CAM, rng(), rgb=grey(10).astype(np.float32))
    with pytest.raises(ValueError, match='CameraModel'):
        model.apply(depth, (600, 600, 320, 240), rng())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for empty in (np.full(depth.shape, np.nan, np.float32), np.zeros(depth.shape), np.full(depth.shape, np.inf)):
            out = model.apply(empty, CAM, rng(), rgb=grey(100))
            assert (out.invalid_reason == R.NO_RETURN).all() and np.isnan(out.depth_m).all()
            assert not out.to_16uc1().any()


def test_presets_names_and_16uc1():
    assert set(ds.DEPTH_MODELS) == set(PRESET_NAMES)
    for name in PRESET_NAMES:
        cam = preset(name)
        model = ds.depth_model_for_preset(name, unit_rng=rng(0))
        out = model.apply(plane(1.5, cam=cam), cam, rng(), rgb=grey(150, cam))
        assert out.depth_m.shape == (cam.height, cam.width) and out.valid.mean() > 0.9, name
    assert ds.depth_model_from_name('stereo') is D435 and ds.depth_model_from_name('tof') is NFOV
    assert isinstance(ds.depth_model_from_name('ideal'), ds.IdealDepthModel)
    assert ds.depth_model_from_name('kinect_xbox360') is KINECT1
    with pytest.raises(ValueError, match="ideal, gaussian, stereo, tof, realsense_d435"):
        ds.depth_model_from_name('lidar')
    with pytest.raises(ValueError, match='realsense_d415'):
        ds.depth_model_for_preset('ideal')
    with pytest.raises(ValueError, match='baseline_m'):
        ds.StereoDepthModel(baseline_m=0.0)
    with pytest.raises(ValueError, match='std_at_1m'):
        ds.gaussian(-1.0)
    out = ds.IdealDepthModel().apply(box_scene(), CAM, rng())
    img = out.to_16uc1()
    assert img.dtype == np.uint16 and img[250, 350] == 1000 and img[0, 0] == 2000


def test_vga_frame_is_fast():
    depth, rgb = box_scene(), grey(120)
    for model in (D435.sample_unit(rng(1)), NFOV.sample_unit(rng(1))):
        times = []
        for seed in range(5):
            start = time.perf_counter()
            model.apply(depth, CAM, rng(seed), rgb=rgb)
            times.append(time.perf_counter() - start)
        assert min(times) < 0.1, f'{type(model).__name__}: {min(times) * 1e3:.0f} ms for 640x480'
