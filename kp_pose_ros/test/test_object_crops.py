"""Square detection crops: exact point mapping both ways, the warped pixels where the mapping says, padding, depth."""
import numpy as np
import pytest

from kp_pose_ros.objects.crops import CropTransform, crop_depth, crop_images, square_crop


def test_square_crop_is_padded_square_centred_on_the_box():
    t = square_crop([100.0, 50.0, 140.0, 130.0], 128, padding=0.25)
    assert t.side == pytest.approx(100.0)  # max(40, 80) * 1.25
    assert t.centre == pytest.approx((119.5, 89.5))  # box edges -> pixel centres
    assert t.size == 128
    # The box's edges land symmetrically inside the crop.
    edges = t.to_crop(np.array([[100.0, 50.0], [140.0, 130.0]]) - 0.5)
    np.testing.assert_allclose(edges[0] + 0.5 + edges[1] + 0.5, [128.0, 128.0])
    assert square_crop([10.0, 10.0, 12.0, 11.0], 64).side == 16.0  # min_side_px


def test_to_image_inverts_to_crop():
    rng = np.random.default_rng(11)
    t = CropTransform((321.3, 207.8), 143.7, 192)
    points = rng.uniform(-50, 700, size=(5, 7, 2))
    np.testing.assert_allclose(t.to_image(t.to_crop(points)), points, atol=1e-9)
    np.testing.assert_allclose(t.to_crop(t.centre), [95.5, 95.5])
    np.testing.assert_allclose(t.to_crop(np.array(t.centre) - t.side / 2), [-0.5, -0.5])


@pytest.mark.parametrize('box, size', [([200.0, 100.0, 260.0, 190.0], 128), ([31.0, 40.0, 49.0, 52.0], 96)])
def test_a_dot_lands_where_to_crop_predicts(box, size):
    rgb = np.zeros((240, 320, 3), np.uint8)
    t = square_crop(box, size)
    dot = np.array([t.centre[0] + 0.17 * t.side, t.centre[1] - 0.23 * t.side]).round()
    x, y = dot.astype(int)
    rgb[y - 1:y + 2, x - 1:x + 2] = 255  # a 3x3 dot, symmetric about (x, y)
    crop = crop_images(rgb, [t])[0, ..., 1].astype(np.float64)
    rows, cols = np.mgrid[:size, :size]
    centroid = np.array([(crop * cols).sum(), (crop * rows).sum()]) / crop.sum()
    np.testing.assert_allclose(centroid, t.to_crop(dot), atol=0.5)


def test_crops_are_one_batch_and_pad_past_the_border():
    rgb = np.full((120, 160, 3), 7, np.uint8)
    transforms = [square_crop([40.0, 30.0, 80.0, 70.0], 64), square_crop([140.0, 100.0, 170.0, 130.0], 64)]
    crops = crop_images(rgb, transforms, pad_value=(114, 115, 116))
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    assert np.all(crops[0] == 7)  # inside the image
    np.testing.assert_array_equal(crops[1, -1, -1], [114, 115, 116])  # past the bottom-right corner
    np.testing.assert_array_equal(crops[1, 0, 0], [7, 7, 7])
    assert crop_images(rgb, []).shape == (0, 0, 0, 3)
    with pytest.raises(ValueError, match='share one size'):
        crop_images(rgb, [CropTransform((50, 50), 40, 64), CropTransform((50, 50), 40, 32)])


def test_depth_crop_keeps_holes_and_nearest_values():
    depth = np.arange(60 * 80, dtype=np.float32).reshape(60, 80) / 1000.0 + 0.5
    depth[20, 30] = np.nan
    depth[21, 30] = 0.0  # a driver's hole
    t = CropTransform((30.0, 20.0), 20.0, 40)  # 2 crop pixels per image pixel
    crop = crop_depth(depth, [t])[0]
    assert crop.dtype == np.float32 and crop.shape == (40, 40)
    valid = crop[np.isfinite(crop)]
    assert np.all(np.isin(valid, depth))  # nearest neighbour: no value is invented
    # Crop pixels whose centres map into image pixel (30, 20) or (30, 21) are holes.
    hole = t.to_crop(np.array([[30.0, 20.0], [30.0, 21.0]])).round().astype(int)
    assert np.isnan(crop[hole[:, 1], hole[:, 0]]).all()
    assert np.count_nonzero(np.isnan(crop)) == 8  # two image pixels, 2x2 crop pixels each
    inside = t.to_crop([[25.0, 15.0]]).round().astype(int)[0]
    assert crop[inside[1], inside[0]] == depth[15, 25]
    outside = crop_depth(depth, [CropTransform((75.0, 55.0), 20.0, 20)])[0]
    assert np.isnan(outside[-1, -1]) and np.isfinite(outside[0, 0])
