"""Fit an image of any size into a network's fixed input without distorting it, and map points back.

The image is scaled by one factor (aspect ratio kept), centred and padded with a constant colour, as YOLO and the
keypoint networks expect. Points use the ROS / OpenCV convention of pixel centres at integer coordinates; the mapping
is the one cv2.resize samples with (pixel edges, not centres, line up), so a point goes to the input and back exactly.
Box edges in the continuous convention (pixel i spans [i, i + 1), as YOLO outputs) map through the same transform
after shifting by half a pixel: `to_original(edges - 0.5) + 0.5`.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import cv2
import numpy as np


def _size(size, what: str) -> tuple[int, int]:
    try:
        width, height = (operator.index(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f'{what} must be a (width, height) pair of integers, got {size!r}') from None
    if width < 1 or height < 1:
        raise ValueError(f'{what} must be positive, got {width}x{height}')
    return width, height


def as_points(points) -> np.ndarray:
    """(..., 2) float64 points (x, y), checked."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 0 or points.shape[-1] != 2:
        raise ValueError(f'points must be an (..., 2) array of (x, y), got shape {points.shape}')
    return points


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits inside the network input: `resized` pixels at offset (`pad_x`, `pad_y`)."""

    source_size: tuple[int, int]   # (width, height) of the original image
    input_size: tuple[int, int]    # (width, height) of the network input
    resized_size: tuple[int, int]  # (width, height) the image is resized to before padding
    pad_x: int
    pad_y: int

    @classmethod
    def fit(cls, source_size, input_size) -> Letterbox:
        """The largest aspect-preserving fit of `source_size` into `input_size`, centred."""
        src_w, src_h = _size(source_size, 'source_size')
        dst_w, dst_h = _size(input_size, 'input_size')
        scale = min(dst_w / src_w, dst_h / src_h)
        new_w = min(dst_w, max(1, round(src_w * scale)))
        new_h = min(dst_h, max(1, round(src_h * scale)))
        return cls((src_w, src_h), (dst_w, dst_h), (new_w, new_h), (dst_w - new_w) // 2, (dst_h - new_h) // 2)

    @property
    def scale(self) -> np.ndarray:
        """(sx, sy) input pixels per original pixel; equal up to the rounding of the resized size."""
        return np.array([self.resized_size[0] / self.source_size[0], self.resized_size[1] / self.source_size[1]])

    @property
    def offset(self) -> np.ndarray:
        """(ox, oy) such that input = original * scale + offset (pixel centres at integers)."""
        return 0.5 * self.scale - 0.5 + [self.pad_x, self.pad_y]

    def to_input(self, points) -> np.ndarray:
        """Original-image pixel coordinates (..., 2) -> network-input pixel coordinates."""
        return as_points(points) * self.scale + self.offset

    def to_original(self, points) -> np.ndarray:
        """Network-input pixel coordinates (..., 2) -> original-image pixel coordinates."""
        return (as_points(points) - self.offset) / self.scale

    def contains(self, points) -> np.ndarray:
        """Which network-input points (..., 2) fall on image content rather than padding."""
        points = as_points(points)
        lo = np.array([self.pad_x, self.pad_y]) - 0.5
        hi = lo + self.resized_size
        return np.all((points >= lo) & (points < hi), axis=-1)

    def apply(self, image: np.ndarray, pad_value: float | tuple[float, ...] = 114,
              interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """The letterboxed network input: `image` (H, W[, C]) of source_size resized and padded to input_size.

        `interpolation` is the cv2 resize filter the network was trained with (YOLO models: cv2.INTER_LINEAR, the
        filter of ultralytics' LetterBox, whose sizes and padding `fit` reproduces exactly)."""
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.shape[1::-1] != self.source_size:
            raise ValueError(f'expected an image of {self.source_size[0]}x{self.source_size[1]} (H, W[, C]), got '
                             f'shape {image.shape}')
        # The default INTER_AREA averages when shrinking (no aliasing of thin robot links); it is bilinear when
        # enlarging.
        resized = image if self.resized_size == self.source_size else cv2.resize(
            image, self.resized_size, interpolation=interpolation)
        dst_w, dst_h = self.input_size
        right, bottom = dst_w - self.resized_size[0] - self.pad_x, dst_h - self.resized_size[1] - self.pad_y
        if image.ndim == 3 and np.ndim(pad_value) == 0:
            pad_value = (pad_value,) * image.shape[2]
        return cv2.copyMakeBorder(resized, self.pad_y, bottom, self.pad_x, right, cv2.BORDER_CONSTANT,
                                  value=pad_value).reshape((dst_h, dst_w) + image.shape[2:])


def letterbox(image: np.ndarray, input_size, pad_value: float | tuple[float, ...] = 114
              ) -> tuple[np.ndarray, Letterbox]:
    """(letterboxed image, mapping) for an image (H, W[, C]) and a network input size (width, height)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f'expected an (H, W) or (H, W, C) image, got shape {image.shape}')
    box = Letterbox.fit((image.shape[1], image.shape[0]), input_size)
    return box.apply(image, pad_value), box
