"""sensor_msgs/Image and CameraInfo <-> the arrays and CameraModel that ``core`` works on (no cv_bridge on PyPI)."""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from kp_pose_ros.core.camera import PLUMB_BOB, CameraModel, CameraModelError
from kp_pose_ros.core.image_codec import ImageEncodingError, decode_image, depth_to_metres, encode_image, to_rgb8
from kp_pose_ros.ros.stamps import age_s

_IDENTITY_R = np.eye(3).reshape(-1)


def _copy_header(header: Header) -> Header:
    """A new Header equal to ``header``, so the published message never shares state with the caller's."""
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id)


def image_to_array(msg: Image, copy: bool = False) -> np.ndarray:
    """The image as (H, W, C) or (H, W); a read-only view of ``msg.data`` unless ``copy`` (see ``decode_image``)."""
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data, copy=copy)


def array_to_image(image: np.ndarray, encoding: str, header: Header) -> Image:
    """An Image message holding ``image`` in ``encoding``, stamped with a copy of ``header``."""
    height, width, step, is_bigendian, data = encode_image(image, encoding)
    msg = Image(header=_copy_header(header), height=height, width=width, encoding=encoding,
                is_bigendian=is_bigendian, step=step)
    # Assigning an array.array('B') skips rclpy's per-element check of a plain sequence (slow for a whole frame).
    msg.data = array.array('B', data)
    return msg


def rgb8_from_msg(msg: Image) -> np.ndarray:
    """A new uint8 HxWx3 RGB array from any colour (or mono8) image message."""
    return to_rgb8(image_to_array(msg), msg.encoding)


def fresh_rgb8(node, msg: Image, max_age_s: float, topic: str = 'image') -> np.ndarray | None:
    """The image as RGB8 for a node's per-frame work, or None when it is older than `max_age_s` (0: any age) or not a
    colour image; either is logged (throttled) and counted in the node's /diagnostics drops, so callers just return."""
    age = age_s(node.get_clock(), msg.header.stamp)
    if max_age_s > 0 and age > max_age_s:
        node.diagnostics.drop('stale')
        node.get_logger().warning(f'dropping an image {age:.2f} s old (max_image_age_s {max_age_s:g})',
                                  throttle_duration_sec=5.0)
        return None
    try:
        return rgb8_from_msg(msg)
    except ImageEncodingError as exc:
        node.diagnostics.drop('bad_image')
        node.get_logger().error(f'cannot use image on {node.resolve_topic_name(topic)}: {exc}',
                                throttle_duration_sec=5.0)
        return None


def depth_m_from_msg(msg: Image) -> np.ndarray:
    """A new float32 HxW depth array in metres (NaN = no return); colour encodings raise ImageEncodingError."""
    return depth_to_metres(image_to_array(msg), msg.encoding)


def camera_model_from_info(msg: CameraInfo) -> CameraModel:
    """The camera described by a CameraInfo message; refuses one published before the camera was calibrated."""
    K = np.asarray(msg.k, dtype=np.float64)
    if not np.any(K):
        raise CameraModelError(
            'camera_info has no intrinsics (K is all zeros): the driver is publishing before calibration, '
            'or the camera_info topic is not the one belonging to this image')
    return CameraModel(width=msg.width, height=msg.height, K=K.reshape(3, 3), D=np.asarray(msg.d, dtype=np.float64),
                       distortion_model=msg.distortion_model)


def camera_info_from_model(model: CameraModel, header: Header) -> CameraInfo:
    """A CameraInfo for an unrectified monocular camera: R = I, P = [K | 0]; no distortion is published as
    'plumb_bob' with five zeros, as camera drivers do."""
    if model.D.size == 0:
        distortion_model, d = PLUMB_BOB, np.zeros(5)
    else:
        distortion_model, d = model.distortion_model or PLUMB_BOB, model.D
    return CameraInfo(header=_copy_header(header), width=model.width, height=model.height,
                      distortion_model=distortion_model, d=d.tolist(), k=model.K.reshape(-1), r=_IDENTITY_R,
                      p=np.hstack([model.K, np.zeros((3, 1))]).reshape(-1))
