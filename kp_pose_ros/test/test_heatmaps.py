"""Letterbox mapping and heatmap decoding: exact round trips, sub-pixel peaks, low confidence on empty maps."""
import numpy as np
import pytest

from kp_pose_ros.core.heatmaps import decode_heatmaps, heatmap_to_input, input_to_heatmap
from kp_pose_ros.core.letterbox import Letterbox, letterbox


@pytest.mark.parametrize('source, expected_resized, expected_pad', [
    ((640, 480), (320, 240), (0, 0)),      # 4:3 into 4:3: no padding
    ((1280, 720), (320, 180), (0, 30)),    # 16:9: bands above and below
    ((480, 640), (180, 240), (70, 0)),     # portrait: bands left and right
    ((1000, 333), (320, 107), (0, 66)),    # odd sizes: rounded resize, padding split unevenly
])
def test_letterbox_fit_and_round_trip(source, expected_resized, expected_pad):
    box = Letterbox.fit(source, (320, 240))
    assert box.resized_size == expected_resized
    assert (box.pad_x, box.pad_y) == expected_pad
    rng = np.random.default_rng(0)
    points = rng.uniform([-10, -10], [source[0] + 10, source[1] + 10], size=(50, 2))
    np.testing.assert_allclose(box.to_original(box.to_input(points)), points, atol=1e-9)
    # The image's corner pixel centres land inside the content area, half an input pixel's worth of scale inwards.
    corners = np.array([[0, 0], [source[0] - 1, source[1] - 1]], dtype=float)
    assert box.contains(box.to_input(corners)).all()
    assert not box.contains(box.to_input(np.array([[-2.0 / box.scale[0], 0.0]]))).any()


def test_letterbox_image_matches_the_point_mapping():
    """A bright pixel block in the source ends up where to_input says, and padding has the requested value."""
    image = np.zeros((720, 1280, 3), np.uint8)
    image[400:408, 200:208] = 255  # block centred at (203.5, 403.5)
    out, box = letterbox(image, (320, 240), pad_value=114)
    assert out.shape == (240, 320, 3) and out.dtype == np.uint8
    assert (out[:30] == 114).all() and (out[210:] == 114).all()
    weights = out[30:210, :, 0].astype(float)
    ys, xs = np.nonzero(weights)
    centroid = np.array([np.average(xs, weights=weights[ys, xs]), np.average(ys + 30, weights=weights[ys, xs])])
    np.testing.assert_allclose(centroid, box.to_input([203.5, 403.5]), atol=1e-6)


def test_letterbox_grayscale_and_bad_input():
    out, box = letterbox(np.full((100, 50), 7, np.uint8), (64, 64), pad_value=0)
    assert out.shape == (64, 64) and box.pad_x == 16 and (out[:, :16] == 0).all() and (out[:, 16:48] == 7).all()
    with pytest.raises(ValueError, match='width, height'):
        Letterbox.fit((640,), (320, 240))
    with pytest.raises(ValueError, match='positive'):
        Letterbox.fit((0, 480), (320, 240))
    with pytest.raises(ValueError, match='expected an image of 640x480'):
        Letterbox.fit((640, 480), (320, 240)).apply(np.zeros((480, 641, 3), np.uint8))
    with pytest.raises(ValueError, match=r'\(\.\.\., 2\)'):
        Letterbox.fit((640, 480), (320, 240)).to_original(np.zeros((3, 3)))


def gaussian_maps(centres: np.ndarray, height: int, width: int, sigma: float, peak: float = 1.0) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([peak * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in centres])


@pytest.mark.parametrize('smoothing', [0.0, 1.0, 2.0])
def test_decode_recovers_subpixel_gaussian_peaks(smoothing):
    rng = np.random.default_rng(1)
    # 2 frames x 7 keypoints, 3 smoothing sigmas from the border (smoothing with edge replication shifts peaks there)
    centres = rng.uniform([8, 8], [72, 52], size=(2, 7, 2))
    maps = np.stack([gaussian_maps(c, 60, 80, sigma=2.0, peak=0.8) for c in centres])
    coords, confidence = decode_heatmaps(maps, smoothing_sigma=smoothing)
    assert coords.shape == (2, 7, 2) and confidence.shape == (2, 7)
    assert np.abs(coords - centres).max() < 0.1
    # The grid maximum of a peak-0.8 Gaussian sampled off-centre: a little below 0.8.
    assert np.all((confidence > 0.7) & (confidence <= 0.8))


def test_decode_plain_argmax_would_be_off_by_up_to_half_a_pixel():
    """The refinement is what brings the error below 0.1 px (guards against it silently doing nothing)."""
    centre = np.array([[20.4, 30.45]])
    coords, _ = decode_heatmaps(gaussian_maps(centre, 60, 80, 2.0))
    assert np.abs(coords - centre).max() < 0.05
    assert np.abs(np.round(centre) - centre).max() > 0.4


def test_decode_empty_and_border_maps():
    maps = np.zeros((3, 60, 80), np.float32)
    maps[1] = 0.01 * np.random.default_rng(2).random((60, 80))  # background noise only
    maps[2] = gaussian_maps(np.array([[0.3, 59.0]]), 60, 80, 2.0)[0]  # peak on the map's corner
    coords, confidence = decode_heatmaps(maps, smoothing_sigma=1.0)
    assert confidence[0] == 0.0 and confidence[1] < 0.011 and confidence[2] > 0.9
    assert np.isfinite(coords).all()
    np.testing.assert_allclose(coords[2], [0.0, 59.0])  # border peaks keep their integer position


def test_decode_rejects_bad_input():
    with pytest.raises(ValueError, match=r'\(\.\.\., H, W\)'):
        decode_heatmaps(np.zeros(5))
    with pytest.raises(ValueError, match='NaN'):
        decode_heatmaps(np.full((1, 4, 4), np.nan))
    with pytest.raises(ValueError, match='smoothing_sigma'):
        decode_heatmaps(np.zeros((1, 4, 4)), smoothing_sigma=-1.0)


def test_heatmap_input_mapping():
    points = np.array([[0.0, 0.0], [1.5, 3.0], [-0.5, -0.5]])
    np.testing.assert_allclose(heatmap_to_input(points, 4), [[1.5, 1.5], [7.5, 13.5], [-0.5, -0.5]])
    np.testing.assert_allclose(input_to_heatmap(heatmap_to_input(points, 4), 4), points)
