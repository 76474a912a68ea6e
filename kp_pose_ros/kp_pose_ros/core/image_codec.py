"""sensor_msgs/Image fields <-> numpy arrays, without cv_bridge (not installable from PyPI).

The functions take the message's raw fields rather than a message so that they stay free of ROS imports; the adapters in
``kp_pose_ros.ros.images`` feed them from real messages. Depth units come from the encoding (REP 118): 16UC1 and mono16
hold millimetres with 0 meaning "no return", 32FC1 holds metres with NaN/inf meaning "no return".
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


class ImageEncodingError(ValueError):
    """An image whose encoding, size or buffer does not fit what the pipeline can read."""


@dataclass(frozen=True)
class _Layout:
    dtype: np.dtype
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


_LAYOUTS: dict[str, _Layout] = {
    'rgb8': _Layout(np.dtype(np.uint8), 3),
    'bgr8': _Layout(np.dtype(np.uint8), 3),
    'rgba8': _Layout(np.dtype(np.uint8), 4),
    'bgra8': _Layout(np.dtype(np.uint8), 4),
    'mono8': _Layout(np.dtype(np.uint8), 1),
    'mono16': _Layout(np.dtype(np.uint16), 1),
    '16UC1': _Layout(np.dtype(np.uint16), 1),
    '32FC1': _Layout(np.dtype(np.float32), 1),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# cv2.cvtColor codes that turn each readable encoding into rgb8; None means the array already is rgb8.
_TO_RGB = {
    'rgb8': None,
    'bgr8': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB,
}
_DEPTH_MM_ENCODINGS = ('16UC1', 'mono16')
_DEPTH_ENCODINGS = ('16UC1', 'mono16', '32FC1')
_MM_PER_M = 1000.0


def _layout(encoding: str) -> _Layout:
    try:
        return _LAYOUTS[encoding]
    except (KeyError, TypeError):
        raise ImageEncodingError(
            f'unsupported image encoding {encoding!r}; supported encodings: {", ".join(SUPPORTED_ENCODINGS)}') from None


def _check_size(height: int, width: int) -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise ImageEncodingError(f'image size must be positive, got height={height} width={width}')


def decode_image(encoding: str, height: int, width: int, step: int, is_bigendian: int | bool, data,
                 copy: bool = False) -> np.ndarray:
    """Read an Image message's fields as an (H, W, C) colour or (H, W) single-channel array in native byte order.

    Aliasing: with ``copy=False`` the result is a READ-ONLY VIEW of ``data`` whenever no byte swap is needed (no copy
    of a full frame per callback); it changes if the caller later writes into that buffer. Received messages own their
    buffer, so a view is safe for them; pass ``copy=True`` for a buffer that will be reused, or for a writable array.
    For consistency the result is read-only whenever ``copy`` is False, even when a byte swap made a private copy.

    ``data`` is any bytes-like object (bytes, bytearray, memoryview, ``array.array('B')`` as rclpy stores it).
    """
    layout = _layout(encoding)
    _check_size(height, width)
    height, width, step = int(height), int(width), int(step)
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ImageEncodingError(
            f'{encoding} image step {step} is smaller than width*bytes_per_pixel = {width}*{layout.bytes_per_pixel} '
            f'= {row_bytes}')
    try:
        buffer = memoryview(data).cast('B')
    except TypeError as exc:
        raise ImageEncodingError(
            f'image data must be a contiguous bytes-like buffer, got {type(data).__name__}: {exc}') from None
    if buffer.nbytes < step * height:
        raise ImageEncodingError(
            f'{encoding} image data has {buffer.nbytes} bytes, '
            f'fewer than step*height = {step}*{height} = {step * height}')

    stored = layout.dtype.newbyteorder('>' if is_bigendian else '<')
    shape = (height, width, layout.channels) if layout.channels > 1 else (height, width)
    strides = (step, layout.bytes_per_pixel, layout.dtype.itemsize)[:len(shape)]
    view = np.ndarray(shape=shape, dtype=stored, buffer=buffer, strides=strides)
    if stored.isnative:  # always so for 8-bit data
        result = view.copy() if copy else view
    else:
        result = view.astype(layout.dtype.newbyteorder('='))
    if not copy:
        result.flags.writeable = False
    return result


def _check_array(array: np.ndarray, encoding: str) -> np.ndarray:
    """Return ``array`` as (H, W[, C]) after checking its dtype and channel count suit ``encoding``."""
    layout = _layout(encoding)
    array = np.asarray(array)
    if array.dtype.kind != layout.dtype.kind or array.dtype.itemsize != layout.dtype.itemsize:
        raise ImageEncodingError(f'{encoding} needs a {layout.dtype.name} array, got {array.dtype.name}')
    if layout.channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected = 'HxW' if layout.channels == 1 else f'HxWx{layout.channels}'
    wanted_ndim = 2 if layout.channels == 1 else 3
    if array.ndim != wanted_ndim or (layout.channels > 1 and array.shape[2] != layout.channels):
        raise ImageEncodingError(f'{encoding} needs a {expected} array, got shape {array.shape}')
    _check_size(array.shape[0], array.shape[1])
    return array


def encode_image(array: np.ndarray, encoding: str) -> tuple[int, int, int, int, bytes]:
    """Pack ``array`` as Image fields ``(height, width, step, is_bigendian, data)``: tightly packed, little-endian."""
    array = _check_array(array, encoding)
    layout = _layout(encoding)
    little = np.ascontiguousarray(array, dtype=layout.dtype.newbyteorder('<'))
    height, width = array.shape[:2]
    return height, width, width * layout.bytes_per_pixel, 0, little.tobytes()


def check_rgb8(rgb, what: str = 'image') -> np.ndarray:
    """`rgb` itself when it is an (H, W, 3) uint8 array, the layout the detectors take; else ValueError naming
    `what` and what it got."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape, dtype = getattr(rgb, 'shape', None), getattr(rgb, 'dtype', type(rgb).__name__)
        raise ValueError(f'{what} expects an RGB image as an (H, W, 3) uint8 array, got shape {shape} dtype {dtype}')
    return rgb


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Any colour encoding or mono8 as a new uint8 HxWx3 RGB array, the layout the detectors were trained on."""
    if encoding not in _TO_RGB:
        _layout(encoding)  # unknown encodings get the full list of supported ones
        raise ImageEncodingError(
            f'cannot show a {encoding} image as rgb8; colour input must be one of {", ".join(_TO_RGB)}')
    array = _check_array(array, encoding)
    code = _TO_RGB[encoding]
    return array.copy() if code is None else cv2.cvtColor(np.ascontiguousarray(array), code)


def _check_depth_encoding(encoding: str, allowed: tuple[str, ...]) -> None:
    if encoding not in allowed:
        _layout(encoding)
        raise ImageEncodingError(
            f'a depth image must be {", ".join(allowed)}; got {encoding} '
            '(is a colour topic connected to a depth input?)')


def depth_to_metres(array: np.ndarray, encoding: str) -> np.ndarray:
    """Depth as a new float32 HxW array in metres, NaN where the sensor had no return (0 mm, or non-finite/<= 0 m)."""
    _check_depth_encoding(encoding, _DEPTH_ENCODINGS)
    array = _check_array(array, encoding)
    if encoding in _DEPTH_MM_ENCODINGS:
        metres = array.astype(np.float32) / np.float32(_MM_PER_M)
        metres[array == 0] = np.nan
    else:
        metres = np.array(array, dtype=np.float32)
        with np.errstate(invalid='ignore'):
            metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def metres_to_depth(depth_m: np.ndarray, encoding: str) -> np.ndarray:
    """Inverse of ``depth_to_metres`` for publishing: 16UC1 rounds to mm (no return -> 0, clipped to 65535 mm),
    32FC1 keeps metres (no return -> NaN). No return is anything non-finite or <= 0."""
    _check_depth_encoding(encoding, ('16UC1', '32FC1'))
    depth_m = np.asarray(depth_m)
    if depth_m.dtype.kind not in 'fiu' or depth_m.ndim != 2:
        raise ImageEncodingError(f'depth in metres must be a real HxW array, got {depth_m.dtype.name} {depth_m.shape}')
    _check_size(*depth_m.shape)
    metres = depth_m.astype(np.float64)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(metres) & (metres > 0)
    if encoding == '32FC1':
        return np.where(valid, metres, np.nan).astype(np.float32)
    mm = np.rint(np.where(valid, metres, 0.0) * _MM_PER_M)
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)
