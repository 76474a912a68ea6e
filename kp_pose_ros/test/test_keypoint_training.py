"""The keypoint network's training targets and the confidence calibration its manifest reports."""
import numpy as np
import pytest

pytest.importorskip('torch', reason='training needs torch (main stack only)')

from kp_pose_ros.core.heatmaps import input_to_heatmap  # noqa: E402
from kp_pose_ros.training import keypoint_data as kd  # noqa: E402


def test_target_peaks_follow_visibility():
    peaks = kd.target_peaks([True, True, False, False], [True, False, False, True])
    np.testing.assert_allclose(peaks, [1.0, kd.OCCLUDED_PEAK, 0.0, 0.0])


def test_gaussian_heatmaps_peak_where_and_as_high_as_asked():
    points = np.array([[100.0, 60.0], [40.0, 200.0], [10.0, 10.0]])
    maps = kd.gaussian_heatmaps(points, np.array([1.0, kd.OCCLUDED_PEAK, 0.0]))
    for k in range(2):
        row, col = np.unravel_index(np.argmax(maps[k]), maps[k].shape)
        np.testing.assert_allclose([col, row], np.round(input_to_heatmap(points[k:k + 1], kd.HEATMAP_STRIDE)[0]))
    assert maps[0].max() == pytest.approx(1.0, abs=0.05)
    assert maps[1].max() == pytest.approx(kd.OCCLUDED_PEAK, abs=0.01)
    assert not maps[2].any()


def test_augment_keeps_only_keypoints_in_the_crop_and_lowers_occluded_ones():
    image = np.full((240, 320, 3), 90, np.uint8)
    keypoints = np.array([[160.0, 120.0], [5000.0, 10.0], [150.0, 100.0]])
    peaks = np.array([1.0, 1.0, kd.OCCLUDED_PEAK], np.float32)
    seen_occluded = False
    for seed in range(100):
        out, moved, got = kd.augment(image, keypoints, peaks, (0, 0, 320, 240), np.random.default_rng(seed))
        assert out.shape == (kd.TRAIN_CROP_SIZE[1], kd.TRAIN_CROP_SIZE[0], 3)
        assert got[1] == 0.0  # far outside
        inside = np.all((moved > -0.5) & (moved < np.array(kd.TRAIN_CROP_SIZE) - 0.5), axis=1)
        assert np.all(got[~inside] == 0.0)
        assert got[2] <= np.float32(kd.OCCLUDED_PEAK)  # never promoted to visible
        seen_occluded |= bool(inside[0] and got[0] == np.float32(kd.OCCLUDED_PEAK))
    assert seen_occluded, 'pasted occluders never covered the centre keypoint in 100 draws'
