"""sensor_msgs adapters on real Image / CameraInfo messages, including what survives the wire (serialisation)."""
import array

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from kp_pose_ros.core.camera import CameraModel, CameraModelError
from kp_pose_ros.core.image_codec import ImageEncodingError
from kp_pose_ros.ros.images import (
    array_to_image,
    camera_info_from_model,
    camera_model_from_info,
    depth_m_from_msg,
    image_to_array,
    rgb8_from_msg,
)

HEADER = Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id='camera_color_optical_frame')
RNG = np.random.default_rng(3)
SAMPLES = {
    'rgb8': RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8),
    'bgr8': RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8),
    'rgba8': RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8),
    'bgra8': RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8),
    'mono8': RNG.integers(0, 256, (4, 6), dtype=np.uint8),
    'mono16': RNG.integers(0, 65536, (4, 6), dtype=np.uint16),
    '16UC1': RNG.integers(0, 65536, (4, 6), dtype=np.uint16),
    '32FC1': RNG.uniform(0.2, 6.0, (4, 6)).astype(np.float32),
}


def realsense_info():
    """CameraInfo as the realsense2_camera driver publishes it for a calibrated 640x480 colour stream."""
    return CameraInfo(header=HEADER, width=640, height=480, distortion_model='plumb_bob',
                      d=[0.1, -0.25, 0.0012, -0.0008, 0.11],
                      k=[615.3, 0.0, 322.4, 0.0, 615.9, 241.7, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[615.3, 0.0, 322.4, 0.0, 0.0, 615.9, 241.7, 0.0, 0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize('encoding', sorted(SAMPLES))
def test_image_round_trip_through_the_wire(encoding):
    image = SAMPLES[encoding]
    msg = array_to_image(image, encoding, HEADER)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (4, 6, encoding, 0)
    assert msg.step == 6 * image.itemsize * (image.shape[2] if image.ndim == 3 else 1)
    received = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(image_to_array(received), image)
    assert received.header == HEADER


def test_header_is_copied_not_shared():
    header = Header(stamp=Time(sec=5, nanosec=6), frame_id='cam')
    msg = array_to_image(SAMPLES['mono8'], 'mono8', header)
    header.frame_id = 'changed'
    header.stamp.sec = 99
    assert msg.header.frame_id == 'cam' and msg.header.stamp.sec == 5


def test_padded_big_endian_message_from_another_driver():
    depth = SAMPLES['16UC1']
    rows = depth.astype('>u2').view(np.uint8).reshape(4, 12)
    data = np.hstack([rows, np.full((4, 4), 0xEE, np.uint8)]).tobytes()
    msg = Image(header=HEADER, height=4, width=6, encoding='16UC1', is_bigendian=1, step=16,
                data=array.array('B', data))
    np.testing.assert_array_equal(image_to_array(msg), depth)
    np.testing.assert_allclose(depth_m_from_msg(msg), np.where(depth == 0, np.nan, depth / 1000.0), rtol=1e-6)


def test_image_to_array_is_a_read_only_view_of_the_message():
    msg = array_to_image(SAMPLES['rgb8'], 'rgb8', HEADER)
    view = image_to_array(msg)
    assert not view.flags.writeable and np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    owned = image_to_array(msg, copy=True)
    assert owned.flags.writeable and not np.shares_memory(owned, np.frombuffer(msg.data, np.uint8))


def test_rgb8_from_bgr8_message():
    bgr = SAMPLES['bgr8']
    np.testing.assert_array_equal(rgb8_from_msg(array_to_image(bgr, 'bgr8', HEADER)), bgr[:, :, ::-1])


def test_depth_from_16uc1_and_32fc1_messages():
    mm = np.array([[0, 500], [1234, 4000]], np.uint16)
    np.testing.assert_allclose(depth_m_from_msg(array_to_image(mm, '16UC1', HEADER)), [[np.nan, 0.5], [1.234, 4.0]],
                               rtol=1e-7)
    metres = np.array([[np.nan, 0.5], [-1.0, 4.0]], np.float32)
    np.testing.assert_array_equal(depth_m_from_msg(array_to_image(metres, '32FC1', HEADER)), [[np.nan, 0.5],
                                                                                              [np.nan, 4.0]])


def test_depth_from_colour_message_is_refused():
    with pytest.raises(ImageEncodingError, match='a depth image must be 16UC1, mono16, 32FC1; got rgb8'):
        depth_m_from_msg(array_to_image(SAMPLES['rgb8'], 'rgb8', HEADER))


def test_unsupported_or_truncated_message_is_refused():
    msg = Image(header=HEADER, height=2, width=2, encoding='yuv422', step=4, data=array.array('B', bytes(8)))
    with pytest.raises(ImageEncodingError, match="unsupported image encoding 'yuv422'"):
        image_to_array(msg)
    msg = Image(header=HEADER, height=2, width=2, encoding='rgb8', step=6, data=array.array('B', bytes(11)))
    with pytest.raises(ImageEncodingError, match='has 11 bytes, fewer than'):
        rgb8_from_msg(msg)


def test_camera_model_from_realsense_info():
    model = camera_model_from_info(realsense_info())
    assert (model.width, model.height, model.distortion_model) == (640, 480, 'plumb_bob')
    assert (model.fx, model.fy, model.cx, model.cy) == (615.3, 615.9, 322.4, 241.7)
    np.testing.assert_array_equal(model.D, [0.1, -0.25, 0.0012, -0.0008, 0.11])


@pytest.mark.parametrize('model', [
    CameraModel(640, 480, [[615.3, 0, 322.4], [0, 615.9, 241.7], [0, 0, 1]], [0.1, -0.25, 0.0012, -0.0008, 0.11]),
    CameraModel(1280, 720, [[605.8, 0, 638.2], [0, 605.6, 364.9], [0, 0, 1]],
                [0.52, -2.65, 0.0006, -0.0003, 1.52, 0.40, -2.48, 1.45], 'rational_polynomial'),
    CameraModel(848, 800, [[285.7, 0, 420.1], [0, 285.8, 404.6], [0, 0, 1]], [-0.0061, 0.0418, -0.0386, 0.0067],
                'equidistant'),
], ids=['plumb_bob', 'rational_polynomial', 'equidistant'])
def test_camera_info_round_trip(model):
    info = deserialize_message(serialize_message(camera_info_from_model(model, HEADER)), CameraInfo)
    assert info.header == HEADER and info.distortion_model == model.distortion_model
    np.testing.assert_array_equal(info.r, np.eye(3).ravel())
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4)), np.hstack([model.K, np.zeros((3, 1))]))
    back = camera_model_from_info(info)
    np.testing.assert_array_equal(back.K, model.K)
    np.testing.assert_array_equal(back.D, model.D)
    assert (back.width, back.height, back.distortion_model) == (model.width, model.height, model.distortion_model)
    points = np.array([[0.2, -0.1, 1.5], [-0.3, 0.25, 0.8]])
    np.testing.assert_array_equal(back.project(points), model.project(points))


def test_camera_info_without_distortion_is_plumb_bob_with_five_zeros():
    info = camera_info_from_model(CameraModel.from_fov(640, 480, 69.4), HEADER)
    assert info.distortion_model == 'plumb_bob' and list(info.d) == [0.0] * 5
    assert info.k[2] == 319.5 and info.k[5] == 239.5
    assert camera_model_from_info(info).hfov_deg == pytest.approx(69.4)


def test_uncalibrated_camera_info_is_refused():
    info = realsense_info()
    info.k = [0.0] * 9
    with pytest.raises(CameraModelError, match=r'camera_info has no intrinsics \(K is all zeros\)'):
        camera_model_from_info(info)
    with pytest.raises(CameraModelError, match='no intrinsics'):
        camera_model_from_info(CameraInfo())


def test_camera_info_with_bad_distortion_is_refused():
    info = realsense_info()
    info.distortion_model = 'fov'
    with pytest.raises(CameraModelError, match="unknown distortion model 'fov'"):
        camera_model_from_info(info)
