"""The voting network's input for one object: sampled 3D points, their colour crop and where each point falls in it.

PAGE's geometry-colour alignment (§4.2) projects each point into a CNN feature map of the colour image; here the
crop is a square around the object's pixels and each point carries its crop coordinates in [-1, 1] (grid_sample's
convention, align_corners=False), so the network samples its colour feature map bilinearly at the point. Points are
centred on their mean and divided by their RMS radius, which makes one network serve objects from eyeglasses to
cabinets; radii come back in those units and are scaled back here. Training (training/articulated_data.py) and the
estimator build observations with this one function, so what is trained is what runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kp_pose_ros.objects.crops import crop_images, square_crop

NUM_POINTS = 2048
CROP_SIZE = 128
MIN_POINTS = 64


@dataclass(frozen=True, eq=False)
class Observation:
    points: np.ndarray       # (N, 3) camera frame, metres
    pixels: np.ndarray       # (N, 2) image pixel coordinates of the points
    source: np.ndarray       # (N,) flat image index each point was sampled from
    centre: np.ndarray       # (3,) mean of the points
    scale: float             # RMS distance of the points from the centre (metres)
    crop: np.ndarray         # (S, S, 3) uint8 colour crop
    uv: np.ndarray           # (N, 2) float32 point positions in the crop, [-1, 1]
    box: tuple[float, float, float, float]  # the object's pixel box (x0, y0, x1, y1)

    @property
    def normalised(self) -> np.ndarray:
        return ((self.points - self.centre) / self.scale).astype(np.float32)


def observe(rgb: np.ndarray, points_image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            num_points: int = NUM_POINTS, crop_size: int = CROP_SIZE, padding: float = 0.1) -> Observation | None:
    """The observation of the object whose pixels are `mask`, from an (H, W, 3) uint8 image and its back-projected
    depth `points_image` (H, W, 3; NaN where there is no depth, e.g. robot.depth_alignment.depth_view(...).points).

    None when fewer than MIN_POINTS pixels of the mask have depth. Points are drawn without replacement where there
    are enough, else every point and the rest repeated.
    """
    flat = np.flatnonzero(mask.reshape(-1) & np.all(np.isfinite(points_image.reshape(-1, 3)), axis=1))
    if len(flat) < MIN_POINTS:
        return None
    if len(flat) >= num_points:
        chosen = rng.choice(flat, num_points, replace=False)
    else:
        chosen = np.concatenate([flat, rng.choice(flat, num_points - len(flat), replace=True)])
    width = mask.shape[1]
    pts = points_image.reshape(-1, 3)[chosen].astype(np.float64)
    pixels = np.stack([chosen % width, chosen // width], axis=1).astype(np.float64)
    centre = pts.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((pts - centre) ** 2, axis=1))))
    rows, cols = np.nonzero(mask)
    box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
    transform = square_crop(box, crop_size, padding=padding)
    crop = crop_images(rgb, [transform])[0]
    uv = ((transform.to_crop(pixels) + 0.5) / crop_size * 2.0 - 1.0).astype(np.float32)
    return Observation(pts, pixels, chosen, centre, max(scale, 1e-6), crop, uv, box)
