"""The pose of one detected rigid object from its keypoints (PnP + RANSAC), optionally corrected with depth.

From a single view, PnP pins the rotation and the direction to the object well, but its distance only through the
object's apparent size: a 1 px keypoint error on a 10 cm object 0.7 m away moves it by about a centimetre along the
viewing ray. A registered depth image measures exactly that direction, so the depth step moves the pose along the
ray only (one unknown, the robust median of the depth offsets of the visible model points) and leaves what PnP
determined well untouched. It is kept only when it stays within ``max_depth_correction_m`` and does not lower the
pose's agreement with the depth.

Symmetric objects have several poses that look the same; canonical_rotation picks the one a publisher should send,
so the published orientation does not jump between them from frame to frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.rigid_fit import pnp_ransac
from kp_pose_ros.core.transforms import as_transform, transform_points


@dataclass(frozen=True)
class ObjectPoseConfig:
    """Thresholds of fit_object_pose. The reprojection threshold grows with the detection because the keypoint
    network works on crops of one size: its errors, a fraction of a heatmap cell, are a fixed fraction of the crop,
    so max(``reprojection_error_px``, ``reprojection_error_fraction`` * side) in image pixels."""

    min_keypoint_confidence: float = 0.3  # keypoints below are treated as missing
    reprojection_error_px: float = 3.0  # inlier threshold floor (image pixels)
    reprojection_error_fraction: float = 0.02  # of the detection's side (the crop side, in image pixels)
    max_rms_fraction: float = 0.6  # the inliers' rms reprojection error must stay below this fraction of the threshold
    min_inliers: int = 4
    refine_with_depth: bool = True
    depth_tolerance_m: float = 0.01  # a model point agrees with the depth within this
    max_depth_correction_m: float = 0.05  # larger moves along the ray are rejected: not this object
    depth_iterations: int = 3  # moving the pose moves its pixels a little: re-associate this many times
    min_depth_points: int = 4  # visible points on valid depth needed to correct the pose

    def inlier_threshold_px(self, side_px: float | None) -> float:
        floor = float(self.reprojection_error_px)
        return floor if side_px is None else max(floor, self.reprojection_error_fraction * float(side_px))


@dataclass(frozen=True, eq=False)
class ObjectPoseResult:
    """``T_cam_obj`` (4x4, camera <- object) is None when ``ok`` is False, with ``message`` saying why; for a kept pose
    ``message`` says what the depth step did. ``inliers`` (K,) marks the keypoints the pose reprojects within the
    threshold. ``inlier_ratio`` is over all K model keypoints, so missing and low-confidence keypoints count as not
    supporting the pose. ``depth_agreement``: of the model points the pose shows in front of the measured depth or on
    it (points with something nearer measured in front of them are occluded and not counted), the fraction within
    the depth tolerance; NaN without depth or where no point lands on valid depth. ``depth_correction_m``: the signed
    move along the viewing ray the depth step applied (0 when it was not applied or rejected, NaN without depth).
    ``score`` = inlier_ratio * mean confidence of the inliers * depth_agreement (when finite), in [0, 1].
    """

    ok: bool
    T_cam_obj: np.ndarray | None
    inliers: np.ndarray
    inlier_ratio: float = 0.0
    reprojection_rms_px: float = math.nan
    depth_agreement: float = math.nan
    depth_correction_m: float = math.nan
    score: float = 0.0
    message: str = ''


def _rejected(k: int, message: str) -> ObjectPoseResult:
    return ObjectPoseResult(False, None, np.zeros(k, dtype=bool), message=message)


def _front_most(pixels: np.ndarray, z: np.ndarray, tolerance_m: float) -> np.ndarray:
    """Which projected points are on the side of the model facing the camera: within ``tolerance_m`` of the nearest
    point in their cell of a coarse pixel grid. Model points are sparse, so a point on the far side usually has no
    near-side point on its own pixel; a cell of about two point spacings has some."""
    span = pixels.max(axis=0) - pixels.min(axis=0) + 1.0
    cell = max(1.0, 2.0 * math.sqrt(float(span[0] * span[1]) / len(pixels)))
    cells = np.floor((pixels - pixels.min(axis=0)) / cell).astype(np.int64)
    _, key = np.unique(cells[:, 1] * (int(span[0] // cell) + 2) + cells[:, 0], return_inverse=True)
    key = key.reshape(-1)  # numpy 2.0.0 returned it in the input's shape
    nearest = np.full(key.max() + 1, np.inf)
    np.minimum.at(nearest, key, z)
    return z <= nearest[key] + tolerance_m


def _depth_offsets(T: np.ndarray, points: np.ndarray, depth: np.ndarray, camera: CameraModel,
                   tolerance_m: float) -> np.ndarray:
    """Measured minus predicted depth of the points the pose shows facing the camera, on valid depth pixels."""
    x = transform_points(T, points)
    cols, rows, inside = camera.pixel_indices(camera.project(x))
    if not inside.any():
        return np.zeros(0)
    front = _front_most(np.column_stack([cols, rows])[inside].astype(np.float64), x[inside, 2], tolerance_m)
    measured = depth[rows[inside][front], cols[inside][front]].astype(np.float64)
    offsets = measured - x[inside, 2][front]
    keep = np.isfinite(offsets)
    keep[keep] = measured[keep] > 0  # drivers write holes as 0 or NaN
    return offsets[keep]


def _agreement(offsets: np.ndarray, tolerance_m: float) -> float:
    """Fraction of the points not occluded (measured depth not nearer than tolerance) that agree within tolerance;
    0 when all are occluded (the depth shows something in front of the whole object), NaN when there are none."""
    if len(offsets) == 0:
        return math.nan
    agree = np.count_nonzero(np.abs(offsets) <= tolerance_m)
    seen = agree + np.count_nonzero(offsets > tolerance_m)
    return agree / seen if seen else 0.0


def _along_ray(T: np.ndarray, shift_z: float) -> np.ndarray:
    """T moved along the ray through the object's origin so that every point's depth changes by ``shift_z``."""
    out = T.copy()
    out[:3, 3] *= 1.0 + shift_z / T[2, 3]
    return out


def _refine_with_depth(T: np.ndarray, points: np.ndarray, depth: np.ndarray, camera: CameraModel,
                       config: ObjectPoseConfig) -> tuple[np.ndarray, str]:
    """The pose moved along its viewing ray by the median depth offset of its visible points (re-associated
    ``depth_iterations`` times), or T unchanged and why."""
    refined = T
    for _ in range(config.depth_iterations):
        offsets = _depth_offsets(refined, points, depth, camera, config.depth_tolerance_m)
        # Offsets beyond the correction bound are not this object (background around it, an occluder).
        offsets = offsets[np.abs(offsets + refined[2, 3] - T[2, 3]) <= config.max_depth_correction_m]
        if len(offsets) < config.min_depth_points:
            return T, (f'depth not used: {len(offsets)} visible points on valid depth near the pose '
                       f'(need {config.min_depth_points})')
        refined = _along_ray(refined, float(np.median(offsets)))
    move = float(np.linalg.norm(refined[:3, 3] - T[:3, 3]))
    if move > config.max_depth_correction_m:
        return T, f'depth correction rejected: {move * 1000:.0f} mm > {config.max_depth_correction_m * 1000:.0f} mm'
    return refined, f'moved {move * 1000:.1f} mm along the ray by depth'


def fit_object_pose(model_keypoints, pixels, confidence, K_cam, config: ObjectPoseConfig = ObjectPoseConfig(),
                    depth_m: np.ndarray | None = None, model_points: np.ndarray | None = None, *,
                    side_px: float | None = None) -> ObjectPoseResult:
    """Pose T(camera <- object) of one instance from its K keypoints: model coordinates (K, 3) in metres, detected
    pixels (K, 2) (undistorted, i.e. of the pinhole ``K_cam``; NaN for missing) and confidences (K,).

    ``side_px``: the detection's crop side in image pixels, which scales the inlier threshold (ObjectPoseConfig).
    ``depth_m``: a depth image registered to this camera (H, W, metres along the optical axis, NaN or <= 0 for
    holes); ``model_points`` (M, 3): points on the model's surface for the depth step and depth_agreement. Without
    them the inlier keypoints, which lie on the surface, stand in (fewer points, so a rougher correction).
    """
    obj = np.asarray(model_keypoints, dtype=np.float64)
    px = np.asarray(pixels, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    k = len(obj)
    if obj.shape != (k, 3) or px.shape != (k, 2) or conf.shape != (k,):
        raise ValueError(f'need model_keypoints (K, 3), pixels (K, 2) and confidence (K,), got {obj.shape}, '
                         f'{px.shape} and {conf.shape}')
    with np.errstate(invalid='ignore'):
        confident = (conf >= config.min_keypoint_confidence) & np.isfinite(px).all(axis=1)
    if np.count_nonzero(confident) < max(4, config.min_inliers):
        return _rejected(k, f'only {np.count_nonzero(confident)} of {k} keypoints have confidence >= '
                            f'{config.min_keypoint_confidence}; PnP needs {max(4, config.min_inliers)}')
    threshold = config.inlier_threshold_px(side_px)
    fit = pnp_ransac(obj, np.where(confident[:, None], px, np.nan), K_cam, None, threshold,
                     min_inliers=config.min_inliers)
    if not fit.success:
        return _rejected(k, fit.message)
    if fit.rms > config.max_rms_fraction * threshold:
        return _rejected(k, f'inlier reprojection rms {fit.rms:.2f} px exceeds {config.max_rms_fraction:g} of the '
                            f'{threshold:.2f} px threshold')
    T = fit.T
    if T[2, 3] <= 0:
        # Models are centred on the object (BOP), so the keypoints in front with the origin behind is a wrong pose.
        return _rejected(k, "the pose puts the object's origin behind the camera")
    inliers = fit.inliers
    inlier_ratio = np.count_nonzero(inliers) / k
    score = inlier_ratio * float(np.mean(conf[inliers]))
    if depth_m is None:
        return ObjectPoseResult(True, T, inliers, inlier_ratio, fit.rms, score=score, message='no depth')

    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f'depth_m must be an (H, W) image, got shape {depth.shape}')
    camera = CameraModel(depth.shape[1], depth.shape[0], K_cam)
    points = obj[inliers] if model_points is None else np.asarray(model_points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f'model_points must be an (M, 3) array with M >= 1, got shape {points.shape}')
    tolerance = config.depth_tolerance_m
    agreement = _agreement(_depth_offsets(T, points, depth, camera, tolerance), tolerance)
    correction, message = 0.0, 'depth refinement off'
    if config.refine_with_depth:
        refined, message = _refine_with_depth(T, points, depth, camera, config)
        refined_agreement = _agreement(_depth_offsets(refined, points, depth, camera, tolerance), tolerance)
        if refined is not T and refined_agreement >= agreement:
            correction = float(np.sign(refined[2, 3] - T[2, 3]) * np.linalg.norm(refined[:3, 3] - T[:3, 3]))
            T, agreement = refined, refined_agreement
        elif refined is not T:
            message = (f'depth correction rejected: agreement would fall from {agreement:.2f} to '
                       f'{refined_agreement:.2f}')
    if math.isfinite(agreement):
        score *= agreement
    # The depth step keeps the rotation and moves every point along its own depth; the reprojection error changes a
    # little, so it is reported for the pose returned.
    return ObjectPoseResult(True, T, inliers, inlier_ratio, _rms(T, obj[inliers], px[inliers], camera),
                            agreement, correction, score, message)


def _rms(T: np.ndarray, points: np.ndarray, pixels: np.ndarray, camera: CameraModel) -> float:
    return float(np.sqrt(np.mean(np.sum((camera.project(transform_points(T, points)) - pixels) ** 2, axis=1))))


def canonical_rotation(T, symmetry_transforms, reference=None) -> np.ndarray:
    """Of the poses T @ S_i that look the same (``symmetry_transforms`` (S, 4, 4) in the object frame, the identity
    among them; a continuous symmetry discretised), the one whose rotation is closest to ``reference``: a rotation
    (3, 3) or pose (4, 4) in the camera frame, e.g. the instance's previous published pose; the camera's own axes when
    None."""
    T = as_transform(T)
    symmetries = np.asarray(symmetry_transforms, dtype=np.float64).reshape(-1, 4, 4)
    if len(symmetries) == 0:
        return T
    R_ref = np.eye(3) if reference is None else np.asarray(reference, dtype=np.float64)[:3, :3]
    candidates = T @ symmetries
    # The geodesic angle to the reference falls as trace(R_ref^T R) rises.
    closeness = np.einsum('ij,hij->h', R_ref, candidates[:, :3, :3])
    return candidates[int(np.argmax(closeness))]
