"""Square, padded crops around detections, for the keypoint network (the paper's second stage).

A square crop keeps the object's aspect ratio whatever the box's, and the padding leaves context around a box that
cut the object short; every crop of a frame has the same size, so all detections go through the network in one
batch. Each crop is one similarity (scale and shift) of the image, applied by one cv2.warpAffine: no intermediate
copy of a crop region, and a crop reaching past the image border is padded instead of shifted or shrunk, so the
object stays centred. Points use the ROS / OpenCV convention of pixel centres at integer coordinates, which is also
the one warpAffine samples with, so a keypoint found in a crop maps back to the image exactly.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from kp_pose_ros.core.letterbox import as_points


@dataclass(frozen=True)
class CropTransform:
    """The similarity image pixels -> crop pixels: a square of ``side`` image pixels centred on ``centre`` (image
    coordinates, pixel centres at integers) resampled to ``size`` x ``size`` crop pixels."""

    centre: tuple[float, float]
    side: float
    size: int

    def __post_init__(self) -> None:
        centre = tuple(float(c) for c in self.centre)
        if len(centre) != 2 or not all(math.isfinite(c) for c in centre):
            raise ValueError(f'centre must be a finite (x, y) pair, got {self.centre!r}')
        side = float(self.side)
        if not math.isfinite(side) or side <= 0:
            raise ValueError(f'side must be a finite number > 0, got {self.side!r}')
        try:
            size = operator.index(self.size)
        except TypeError:
            raise ValueError(f'size must be an integer, got {self.size!r}') from None
        if size < 1:
            raise ValueError(f'size must be positive, got {size}')
        object.__setattr__(self, 'centre', centre)
        object.__setattr__(self, 'side', side)
        object.__setattr__(self, 'size', size)

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return self.size / self.side

    @property
    def origin(self) -> np.ndarray:
        """Image coordinates of the crop's top-left pixel edge: crop = (image - origin) * scale - 0.5."""
        return np.asarray(self.centre) - self.side / 2.0

    def to_crop(self, points) -> np.ndarray:
        """Image pixel coordinates (..., 2) -> crop pixel coordinates (crop pixel edges span [-0.5, size - 0.5])."""
        return (as_points(points) - self.origin) * self.scale - 0.5

    def to_image(self, points) -> np.ndarray:
        """Crop pixel coordinates (..., 2), e.g. heatmap peaks scaled to the crop -> image pixel coordinates."""
        return (as_points(points) + 0.5) / self.scale + self.origin

    def crop_to_image_matrix(self) -> np.ndarray:
        """2x3 affine map crop -> image, for cv2.warpAffine with WARP_INVERSE_MAP (no inversion rounding)."""
        inv = 1.0 / self.scale
        ox, oy = self.origin + 0.5 * inv
        return np.array([[inv, 0.0, ox], [0.0, inv, oy]])


def square_crop(box_xyxy, crop_size: int, padding: float = 0.2, min_side_px: float = 16.0) -> CropTransform:
    """The crop around a detection box (x0, y0, x1, y1) in the continuous convention detectors output (pixel i spans
    [i, i + 1)): a square of side max(w, h) * (1 + padding), at least ``min_side_px`` (a tiny box still gets a crop the
    network can see something in), centred on the box."""
    box = np.asarray(box_xyxy, dtype=np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f'box_xyxy must be a finite (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, got {box.tolist()}')
    if not padding >= 0 or not min_side_px > 0:
        raise ValueError(f'need padding >= 0 and min_side_px > 0, got {padding} and {min_side_px}')
    side = max(max(box[2] - box[0], box[3] - box[1]) * (1.0 + padding), float(min_side_px))
    # Box edges -> pixel-centre coordinates: the pixel whose edges are [i, i + 1) has its centre at i.
    centre = ((box[0] + box[2]) / 2.0 - 0.5, (box[1] + box[3]) / 2.0 - 0.5)
    return CropTransform(centre, side, crop_size)


def _common_size(transforms: Sequence[CropTransform]) -> int:
    sizes = {t.size for t in transforms}
    if len(sizes) > 1:
        raise ValueError(f'crops of one batch must share one size, got {sorted(sizes)}')
    return sizes.pop() if sizes else 0


def crop_images(rgb: np.ndarray, transforms: Sequence[CropTransform], pad_value: float | tuple[float, ...] = 114
                ) -> np.ndarray:
    """The crops of an (H, W, 3) uint8 image, stacked (N, S, S, 3) uint8 ((0, 0, 0, 3) for no transforms); bilinear,
    and ``pad_value`` (one value or one per channel) where a crop reaches past the image."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected an (H, W, 3) uint8 image, got shape {rgb.shape} dtype {rgb.dtype}')
    size = _common_size(transforms)
    value = (pad_value,) * 3 if np.ndim(pad_value) == 0 else tuple(pad_value)
    out = np.empty((len(transforms), size, size, 3), dtype=np.uint8)
    for crop, transform in zip(out, transforms):
        cv2.warpAffine(rgb, transform.crop_to_image_matrix(), (size, size), dst=crop,
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=value)
    return out


def crop_depth(depth_m: np.ndarray, transforms: Sequence[CropTransform]) -> np.ndarray:
    """The same crops of a depth image (H, W) in metres, stacked (N, S, S) float32: nearest neighbour, so no depth is
    invented by mixing an edge's foreground and background; holes (NaN, or <= 0 as drivers write them) and
    everything outside the image are NaN."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f'expected an (H, W) depth image, got shape {depth.shape}')
    with np.errstate(invalid='ignore'):
        depth = np.where(depth > 0, depth, np.float32(np.nan))
    size = _common_size(transforms)
    out = np.empty((len(transforms), size, size), dtype=np.float32)
    for crop, transform in zip(out, transforms):
        cv2.warpAffine(depth, transform.crop_to_image_matrix(), (size, size), dst=crop,
                       flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=float('nan'))
    return out
