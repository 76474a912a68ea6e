"""Image fields <-> arrays: every encoding, padded rows, big-endian senders, depth units, the errors users see."""
import numpy as np
import pytest

from kp_pose_ros.core.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageEncodingError,
    decode_image,
    depth_to_metres,
    encode_image,
    metres_to_depth,
    to_rgb8,
)

H, W = 5, 7
CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, 'mono16': 1, '16UC1': 1, '32FC1': 1}
DTYPES = {'mono16': np.uint16, '16UC1': np.uint16, '32FC1': np.float32}


def sample(encoding, rng=None):
    rng = rng or np.random.default_rng(0)
    dtype = np.dtype(DTYPES.get(encoding, np.uint8))
    shape = (H, W) if CHANNELS[encoding] == 1 else (H, W, CHANNELS[encoding])
    if dtype.kind == 'f':
        values = rng.uniform(0.1, 10.0, shape).astype(dtype)
        values[0, :3] = [np.nan, np.inf, -1.5]
        return values
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


def padded(data, row_bytes, step):
    """The same rows with (step - row_bytes) bytes of junk after each, as some drivers send."""
    rows = np.frombuffer(data, np.uint8).reshape(-1, row_bytes)
    junk = np.full((rows.shape[0], step - row_bytes), 0xAB, np.uint8)
    return np.hstack([rows, junk]).tobytes()


def test_supported_encodings_are_exactly_the_documented_ones():
    assert set(SUPPORTED_ENCODINGS) == set(CHANNELS)


@pytest.mark.parametrize('encoding', sorted(CHANNELS))
def test_round_trip_every_encoding(encoding):
    image = sample(encoding)
    height, width, step, is_bigendian, data = encode_image(image, encoding)
    bpp = image.dtype.itemsize * CHANNELS[encoding]
    assert (height, width, step, is_bigendian) == (H, W, W * bpp, 0)
    assert isinstance(data, bytes) and len(data) == H * W * bpp
    decoded = decode_image(encoding, height, width, step, is_bigendian, data)
    assert decoded.dtype == image.dtype and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize('encoding', sorted(CHANNELS))
@pytest.mark.parametrize('extra', [1, 3, 64])
def test_padded_step_skips_row_padding(encoding, extra):
    image = sample(encoding)
    _, _, step, _, data = encode_image(image, encoding)
    decoded = decode_image(encoding, H, W, step + extra, False, padded(data, step, step + extra))
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', '32FC1'])
@pytest.mark.parametrize('extra', [0, 3])
def test_big_endian_data_comes_back_in_native_order(encoding, extra):
    image = sample(encoding)
    big = image.astype(image.dtype.newbyteorder('>')).tobytes()
    step = W * image.dtype.itemsize
    decoded = decode_image(encoding, H, W, step + extra, True, padded(big, step, step + extra))
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, image)
    # Read as little-endian the same bytes are different numbers: the flag really matters.
    assert not np.array_equal(decode_image(encoding, H, W, step, False, big), image, equal_nan=True)


def test_big_endian_flag_is_irrelevant_for_8_bit_data():
    image = sample('rgb8')
    fields = encode_image(image, 'rgb8')
    np.testing.assert_array_equal(decode_image('rgb8', *fields[:3], True, fields[4]), image)


def test_encode_writes_little_endian_whatever_the_array_order():
    image = np.array([[1, 258]], dtype='>u2')
    assert encode_image(image, '16UC1')[4] == b'\x01\x00\x02\x01'


def test_decode_is_a_read_only_view_unless_copy_requested():
    image = sample('16UC1')
    _, _, step, _, data = encode_image(image, '16UC1')
    buffer = bytearray(data)
    view = decode_image('16UC1', H, W, step, False, buffer)
    assert np.shares_memory(view, np.frombuffer(buffer, np.uint8)) and not view.flags.writeable
    owned = decode_image('16UC1', H, W, step, False, buffer, copy=True)
    assert owned.flags.writeable and not np.shares_memory(owned, np.frombuffer(buffer, np.uint8))
    buffer[:2] = b'\xff\xff'   # the caller reuses its buffer: only the view sees it
    assert view[0, 0] == 0xFFFF and owned[0, 0] == image[0, 0]


def test_decode_accepts_the_buffer_types_rclpy_and_numpy_use():
    import array

    image = sample('bgra8')
    _, _, step, _, data = encode_image(image, 'bgra8')
    for buffer in (array.array('B', data), memoryview(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(decode_image('bgra8', H, W, step, False, buffer), image)


@pytest.mark.parametrize('encoding', ['yuv422', '8UC3', 'bayer_rggb8', '', 'RGB8'])
def test_unknown_encoding_is_named_with_the_supported_list(encoding):
    with pytest.raises(ImageEncodingError) as err:
        decode_image(encoding, 2, 2, 6, False, bytes(12))
    assert repr(encoding) in str(err.value)
    for name in SUPPORTED_ENCODINGS:
        assert name in str(err.value)
    with pytest.raises(ImageEncodingError, match='unsupported image encoding'):
        encode_image(np.zeros((2, 2, 3), np.uint8), encoding)


def test_short_data_is_refused():
    with pytest.raises(ImageEncodingError, match=r'has 29 bytes, fewer than step\*height = 10\*3 = 30'):
        decode_image('16UC1', 3, 5, 10, False, bytes(29))


def test_step_smaller_than_a_row_is_refused():
    with pytest.raises(ImageEncodingError, match=r'step 8 is smaller than width\*bytes_per_pixel = 3\*3 = 9'):
        decode_image('rgb8', 2, 3, 8, False, bytes(100))


@pytest.mark.parametrize('height, width', [(0, 4), (4, 0), (-1, 4)])
def test_zero_size_is_refused(height, width):
    with pytest.raises(ImageEncodingError, match='image size must be positive'):
        decode_image('mono8', height, width, 4, False, bytes(16))


def test_non_buffer_data_is_refused():
    with pytest.raises(ImageEncodingError, match='bytes-like buffer, got list'):
        decode_image('mono8', 1, 2, 2, False, [1, 2])


@pytest.mark.parametrize('array, encoding, message', [
    (np.zeros((2, 2, 3), np.float64), 'rgb8', 'rgb8 needs a uint8 array, got float64'),
    (np.zeros((2, 2, 4), np.uint8), 'rgb8', r'rgb8 needs a HxWx3 array, got shape \(2, 2, 4\)'),
    (np.zeros((2, 2), np.uint8), 'bgra8', r'bgra8 needs a HxWx4 array, got shape \(2, 2\)'),
    (np.zeros((2, 2, 3), np.uint16), '16UC1', r'16UC1 needs a HxW array, got shape \(2, 2, 3\)'),
    (np.zeros((2, 2), np.int16), '16UC1', '16UC1 needs a uint16 array, got int16'),
    (np.zeros((2, 2), np.float64), '32FC1', '32FC1 needs a float32 array, got float64'),
    (np.zeros((0, 3), np.uint8), 'mono8', 'image size must be positive'),
])
def test_encode_checks_dtype_and_shape(array, encoding, message):
    with pytest.raises(ImageEncodingError, match=message):
        encode_image(array, encoding)


def test_encode_accepts_single_channel_with_trailing_axis():
    image = sample('mono8')
    assert encode_image(image[:, :, None], 'mono8') == encode_image(image, 'mono8')


def test_to_rgb8_from_every_colour_encoding():
    rgb = sample('rgb8')
    alpha = np.full((H, W, 1), 7, np.uint8)
    cases = {'rgb8': rgb, 'bgr8': rgb[:, :, ::-1], 'rgba8': np.concatenate([rgb, alpha], axis=2),
             'bgra8': np.concatenate([rgb[:, :, ::-1], alpha], axis=2)}
    for encoding, image in cases.items():
        out = to_rgb8(image, encoding)
        assert out.dtype == np.uint8 and out.shape == (H, W, 3)
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)
    assert not np.shares_memory(to_rgb8(rgb, 'rgb8'), rgb)
    mono = sample('mono8')
    np.testing.assert_array_equal(to_rgb8(mono, 'mono8'), np.repeat(mono[:, :, None], 3, axis=2))


def test_to_rgb8_works_on_padded_read_only_views():
    image = sample('bgr8')
    _, _, step, _, data = encode_image(image, 'bgr8')
    view = decode_image('bgr8', H, W, step + 5, False, padded(data, step, step + 5))
    np.testing.assert_array_equal(to_rgb8(view, 'bgr8'), image[:, :, ::-1])


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', '32FC1'])
def test_to_rgb8_refuses_depth(encoding):
    with pytest.raises(ImageEncodingError, match=f'cannot show a {encoding} image as rgb8'):
        to_rgb8(sample(encoding), encoding)


@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
def test_millimetre_depth_to_metres(encoding):
    mm = np.array([[0, 1], [1234, 65535]], np.uint16)
    metres = depth_to_metres(mm, encoding)
    assert metres.dtype == np.float32
    np.testing.assert_allclose(metres, [[np.nan, 0.001], [1.234, 65.535]], rtol=1e-7)


def test_float_depth_to_metres_marks_invalid_pixels():
    raw = np.array([[np.nan, np.inf, -np.inf], [-0.5, 0.0, 2.5]], np.float32)
    metres = depth_to_metres(raw, '32FC1')
    np.testing.assert_array_equal(np.isnan(metres), [[True, True, True], [True, True, False]])
    assert metres[1, 2] == np.float32(2.5)
    assert np.isinf(raw[0, 1]), 'the input must not be modified'


def test_depth_functions_refuse_colour_encodings():
    with pytest.raises(ImageEncodingError, match='a depth image must be 16UC1, mono16, 32FC1; got rgb8'):
        depth_to_metres(sample('rgb8'), 'rgb8')
    with pytest.raises(ImageEncodingError, match='unsupported image encoding'):
        depth_to_metres(sample('16UC1'), '16UC2')
    with pytest.raises(ImageEncodingError, match='16UC1 needs a uint16 array, got float32'):
        depth_to_metres(np.ones((2, 2), np.float32), '16UC1')


def test_metres_to_16uc1_rounds_clips_and_zeroes_invalid():
    metres = np.array([[np.nan, 0.0004, 1.2344, 1.2346], [70.0, -1.0, np.inf, 0.0]])
    np.testing.assert_array_equal(metres_to_depth(metres, '16UC1'), [[0, 0, 1234, 1235], [65535, 0, 0, 0]])
    assert metres_to_depth(metres, '16UC1').dtype == np.uint16


def test_metres_to_32fc1_keeps_metres_and_nans_invalid():
    metres = np.array([[np.nan, 1.5, -2.0, np.inf]])
    out = metres_to_depth(metres, '32FC1')
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[np.nan, 1.5, np.nan, np.nan]])


def test_every_millimetre_value_survives_metres_and_back():
    mm = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    np.testing.assert_array_equal(metres_to_depth(depth_to_metres(mm, '16UC1'), '16UC1'), mm)


def test_metres_to_depth_refuses_bad_input():
    with pytest.raises(ImageEncodingError, match='a depth image must be 16UC1, 32FC1; got mono16'):
        metres_to_depth(np.ones((2, 2)), 'mono16')
    with pytest.raises(ImageEncodingError, match=r'real HxW array, got float64 \(2, 2, 1\)'):
        metres_to_depth(np.ones((2, 2, 1)), '16UC1')
