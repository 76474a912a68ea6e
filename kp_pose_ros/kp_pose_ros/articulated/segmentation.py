"""Finding articulated objects in a depth image: what stands above the dominant support plane, split into connected
regions.

Why depth segmentation and not a detector: it needs no training, so it finds unseen instances and shapes of any
category (the category comes from the voting network's part labels), and the articulated objects this pipeline is
for (cabinets, drawers, laptops) stand on a floor or table. A region is what the voting network then labels point by
point, so clutter that joins a region is rejected there as background. Limits: objects flatter than `min_height_m`
(a closed pair of scissors on a noisy depth) vanish into the plane, objects that touch merge into one region, and a
view without a dominant plane finds nothing (the reason says so).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kp_pose_ros.robot.depth_alignment import DepthView
from kp_pose_ros.robot.depth_registration import support_planes


@dataclass(frozen=True)
class SegmentationConfig:
    min_height_m: float = 0.012    # above the plane (stereo noise: ~2-5 mm at 1 m, about 4x that at 2 m)
    min_pixels: int = 300          # smaller regions are noise or objects too far to estimate
    max_extent_m: float = 2.5      # larger regions are walls or furniture, not objects
    closing_px: int = 3            # closing that joins the valid pixels of a face with depth holes
    opening_px: int = 2            # opening that drops isolated noise and thin bridges between regions
    plane_candidates: int = 3      # dominant planes tried as the support
    plane_samples: int = 5000      # depth points the plane search looks at
    below_tolerance_m: float = 0.03


@dataclass(frozen=True, eq=False)
class Regions:
    masks: list[np.ndarray]        # (H, W) bool per region, largest first
    T_cam_plane: np.ndarray | None  # the support plane (z up towards the camera), None when none was found
    reason: str = ''


def find_regions(view: DepthView, rng: np.random.Generator, config: SegmentationConfig = SegmentationConfig()
                 ) -> Regions:
    """The object regions of a depth view (robot.depth_alignment.depth_view: edges and holes already removed)."""
    cloud, normals = view.cloud, view.cloud_normals
    if len(cloud) > config.plane_samples:
        keep = rng.choice(len(cloud), config.plane_samples, replace=False)
        cloud, normals = cloud[keep], normals[keep]
    planes = support_planes(cloud, normals, rng, planes=config.plane_candidates)
    if not planes:
        return Regions([], None, 'no dominant support plane in the depth image')
    # The support plane has (almost) nothing below it; a cabinet's side, also a large plane, has the floor behind it.
    below = [np.mean((cloud - T[:3, 3]) @ T[:3, 2] < -config.below_tolerance_m) for T in planes]
    T = planes[int(np.argmin(below))]
    up, origin = T[:3, 2], T[:3, 3]
    with np.errstate(invalid='ignore'):
        height = (view.points - origin) @ up
        above = np.isfinite(height) & (height > config.min_height_m)
    # Stereo depth of a textureless face is a sieve: close the holes first, then open away isolated floor noise.
    mask = cv2.morphologyEx(above.astype(np.uint8), cv2.MORPH_CLOSE, _disc(config.closing_px))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disc(config.opening_px))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    masks = []
    for k in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1:
        if stats[k, cv2.CC_STAT_AREA] < config.min_pixels:
            break
        region = labels == k
        pts = view.points[region & above]
        if np.ptp(pts, axis=0).max() > config.max_extent_m:
            continue
        masks.append(region)
    return Regions(masks, T, '' if masks else 'nothing stands on the support plane')


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
