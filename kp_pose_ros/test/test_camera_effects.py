"""Camera/sensor effects (kp_pose_ros.sim.camera_effects): each stage measured against its physical model."""
import dataclasses
import time

import numpy as np
import pytest

from kp_pose_ros.sim import backgrounds, photos
from kp_pose_ros.sim import camera_effects as ce
from kp_pose_ros.sim.camera_effects import CameraEffects, EffectRanges


def _photo(seed=0, height=480, width=640):
    """A real photograph when one is installed (the procedural backgrounds otherwise)."""
    return photos.random_photo_crop(np.random.default_rng(seed), height, width,
                                    fallback=backgrounds.random_background)


def _point(size=41, value=1.0):
    image = np.zeros((size, size, 3), np.float32)
    image[size // 2, size // 2] = value
    return image


def test_all_off_is_identity_and_neutral_settings_change_nothing():
    rgb = _photo(1)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(ce.apply(rgb, CameraEffects(), rng), rgb)
    as_float = rgb.astype(np.float32) / 255.0
    np.testing.assert_array_equal(ce.apply(as_float, CameraEffects(), rng), as_float)
    neutral = CameraEffects(exposure=1.0, white_balance_k=ce.REFERENCE_TEMPERATURE_K, channel_gains=(1.0, 1.0, 1.0),
                            defocus_radius=0.0, motion_length=0.0, gamma=1.0, contrast=1.0, saturation=1.0)
    assert np.abs(ce.apply(rgb, neutral, rng).astype(int) - rgb).max() <= 1


def test_switching_one_effect_off_removes_exactly_that_effect():
    rgb = _photo(2)
    full = CameraEffects(exposure=0.8, white_balance_k=4000.0, defocus_radius=1.5, gamma=2.0)
    for name in ('exposure', 'white_balance_k', 'defocus_radius', 'gamma'):
        without = dataclasses.replace(full, **{name: None})
        expected = {'exposure': 1.0, 'white_balance_k': ce.REFERENCE_TEMPERATURE_K, 'defocus_radius': 0.0,
                    'gamma': 1.0}[name]
        neutral = dataclasses.replace(full, **{name: expected})
        a = ce.apply(rgb, without, np.random.default_rng(0))
        b = ce.apply(rgb, neutral, np.random.default_rng(0))
        assert np.abs(a.astype(int) - b).max() <= 1, name
        assert not np.array_equal(a, ce.apply(rgb, full, np.random.default_rng(0))), name


def test_exposure_scales_mean_brightness_by_the_gain():
    rgb = (_photo(3).astype(np.float32) / 255.0) * 0.5  # no pixel clips at gain 1.8
    for gain in (0.5, 1.3, 1.8):
        out = ce.apply(rgb, CameraEffects(exposure=gain), np.random.default_rng(0))
        assert out.mean() / rgb.mean() == pytest.approx(gain, rel=1e-4)


def test_white_balance_sets_channel_ratios():
    grey = np.full((32, 32, 3), 0.4, np.float32)
    for kelvin in (2800.0, 4000.0, 7500.0):
        gains = ce.white_balance_gains(kelvin)
        out = ce.apply(grey, CameraEffects(white_balance_k=kelvin), np.random.default_rng(0)).reshape(-1, 3).mean(0)
        np.testing.assert_allclose(out / out[1], gains, rtol=1e-4)
    warm, cool = ce.white_balance_gains(3000.0), ce.white_balance_gains(9000.0)
    assert warm[0] > 1.0 > warm[2] and cool[0] < 1.0 < cool[2]
    np.testing.assert_allclose(ce.white_balance_gains(6500.0), 1.0)


@pytest.mark.parametrize('length,angle', [(10.0, 30.0), (8.0, 0.0), (12.0, 90.0), (9.0, 135.0)])
def test_motion_blur_spreads_a_point_along_the_angle_by_the_length(length, angle):
    out = ce.apply(_point(), CameraEffects(motion_length=length, motion_angle_deg=angle), np.random.default_rng(0))
    w = out[..., 0].astype(np.float64)
    assert w.sum() == pytest.approx(1.0, abs=1e-5)
    ys, xs = np.mgrid[:w.shape[0], :w.shape[1]]
    cx, cy = (w * xs).sum(), (w * ys).sum()
    dx, dy = xs - cx, -(ys - cy)  # y up, so angles are counter-clockwise on screen
    cov = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]])
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, 1]
    found = np.rad2deg(np.arctan2(major[1], major[0])) % 180.0
    assert min(abs(found - angle % 180.0), 180.0 - abs(found - angle % 180.0)) < 2.0
    # a uniform segment of length L has standard deviation L / sqrt(12) along it; bilinear splatting adds < 0.3 px
    assert np.sqrt(evals[1]) == pytest.approx(length / np.sqrt(12.0), rel=0.08)
    assert np.sqrt(evals[0]) < 0.5


@pytest.mark.parametrize('radius', [2.0, 4.0, 6.5])
def test_defocus_turns_a_point_into_a_disc_of_the_radius(radius):
    out = ce.apply(_point(), CameraEffects(defocus_radius=radius), np.random.default_rng(0))[..., 0]
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    ys, xs = np.mgrid[:out.shape[0], :out.shape[1]]
    r = np.hypot(xs - out.shape[1] // 2, ys - out.shape[0] // 2)
    inner = out[r < radius - 0.75]
    # nothing outside the disc (edge pixels are partly covered; large kernels go through a DFT, hence the 1e-6)
    assert out[r > radius + 0.75].max() < 1e-6 * inner.max()
    assert inner.min() == pytest.approx(inner.max(), rel=1e-4)  # flat inside: a pillbox, not a Gaussian
    # the area the point is spread over (total / peak) is the disc's, pi r^2
    assert out.sum() / inner.max() == pytest.approx(np.pi * radius ** 2, rel=0.05)


@pytest.mark.parametrize('dtype', [np.float32, np.uint8])
def test_noise_std_follows_the_shot_plus_read_model(dtype):
    shot, read = 2e-3, 0.01
    levels = np.array([0.05, 0.2, 0.5, 0.8])
    flat = np.repeat(levels, 200)[:, None, None] * np.ones((1, 200, 3))  # 4 flat patches of 200 x 200
    image = (flat * 255.0).round().astype(np.uint8) if dtype == np.uint8 else flat.astype(np.float32)
    out = ce.apply(image, CameraEffects(shot_noise=shot, read_noise=read), np.random.default_rng(7))
    out = out.astype(np.float64) / (255.0 if dtype == np.uint8 else 1.0)
    for i, level in enumerate(levels):
        patch = out[i * 200:(i + 1) * 200]
        model = np.sqrt(shot * level + read ** 2)
        assert patch.std() == pytest.approx(model, rel=0.10), level
        assert patch.mean() == pytest.approx(level, abs=0.005)
    # read noise alone: the same standard deviation at every level
    out = ce.apply(flat.astype(np.float32), CameraEffects(read_noise=read), np.random.default_rng(8))
    assert [out[i * 200:(i + 1) * 200].std() for i in range(4)] == pytest.approx([read] * 4, rel=0.05)


def test_standard_normal_table_has_unit_moments():
    z = ce.standard_normal(np.random.default_rng(1), (1000, 1000))
    assert abs(z.mean()) < 0.005 and z.std() == pytest.approx(1.0, abs=0.005)
    assert (np.abs(z) > 2.0).mean() == pytest.approx(0.0455, rel=0.05)  # the tails of a Gaussian


def test_gamma_maps_mid_grey_as_expected():
    grey = np.full((8, 8, 3), 128, np.uint8)
    out = ce.apply(grey, CameraEffects(gamma=2.2), np.random.default_rng(0))
    assert int(out[0, 0, 0]) == round(255.0 * (128 / 255.0) ** (1 / 2.2))  # 186
    # linearising with input_gamma and re-encoding with the same gamma is the identity
    rgb = _photo(4)
    back = ce.apply(rgb, CameraEffects(gamma=2.2), np.random.default_rng(0), input_gamma=2.2)
    assert np.abs(back.astype(int) - rgb).max() <= 1


def test_jpeg_changes_the_image_and_stays_uint8():
    rgb = _photo(5)
    errors = []
    for quality in (95, 60, 20):
        out = ce.apply(rgb, CameraEffects(jpeg_quality=quality), np.random.default_rng(0))
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        errors.append(np.abs(out.astype(int) - rgb).mean())
    assert 0.0 < errors[0] < errors[1] < errors[2]
    out = ce.apply(rgb.astype(np.float32) / 255.0, CameraEffects(jpeg_quality=50), np.random.default_rng(0))
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0


def test_sample_is_deterministic_and_within_ranges():
    a = [CameraEffects.sample(np.random.default_rng(s)) for s in range(200)]
    assert a == [CameraEffects.sample(np.random.default_rng(s)) for s in range(200)]
    r = EffectRanges()
    for e in a:
        assert e.exposure is None or r.exposure[0] <= e.exposure <= r.exposure[1]
        assert e.white_balance_k is None or r.white_balance_k[0] <= e.white_balance_k <= r.white_balance_k[1]
        assert e.shot_noise is None or r.shot_noise[0] <= e.shot_noise <= r.shot_noise[1]
        assert e.jpeg_quality is None or r.jpeg_quality[0] <= e.jpeg_quality <= r.jpeg_quality[1]
    share_on = np.mean([e.defocus_radius is not None for e in a])
    assert share_on == pytest.approx(r.p_defocus, abs=0.1)
    none = EffectRanges(p_exposure=0, p_white_balance=0, p_defocus=0, p_motion=0, p_noise=0, p_gamma=0, p_tone=0,
                        p_jpeg=0)
    off = CameraEffects.sample(np.random.default_rng(0), none)
    assert dataclasses.replace(off, motion_angle_deg=0.0) == CameraEffects()
    rgb = _photo(6)
    effects = CameraEffects.sample(np.random.default_rng(3))
    np.testing.assert_array_equal(ce.apply(rgb, effects, np.random.default_rng(9), input_gamma=2.2),
                                  ce.apply(rgb, effects, np.random.default_rng(9), input_gamma=2.2))


def test_speed_640x480():
    rgb = _photo(7)
    rng = np.random.default_rng(0)
    everything = CameraEffects(exposure=1.2, white_balance_k=3500.0, defocus_radius=1.5, motion_length=6.0,
                               motion_angle_deg=30.0, shot_noise=1e-3, read_noise=0.004, gamma=2.2, contrast=1.1,
                               saturation=0.9, jpeg_quality=80)
    ce.apply(rgb, everything, rng, input_gamma=2.2)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        ce.apply(rgb, everything, rng, input_gamma=2.2)
        times.append(time.perf_counter() - start)
    # about 15 ms on the 2-core development host; the bound leaves room for a loaded CI machine
    assert np.median(times) < 0.040, f'{np.median(times) * 1e3:.1f} ms'
