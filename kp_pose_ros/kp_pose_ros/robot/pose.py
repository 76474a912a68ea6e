"""Camera pose in the robot base frame from robot keypoints (RoboKeyGen §III-C), in the two situations a real cell has:

- unknown joints: lifted 3D keypoints (camera frame) -> joint angles (regressor) -> forward kinematics -> robust 3D-3D
  fit between the keypoints in the base frame and the lifted ones;
- known joints: the robot's own /joint_states -> forward kinematics -> PnP + RANSAC on the 2D keypoints (DREAM-style),
  falling back on the 3D-3D fit when too few 2D keypoints were found.

With a static camera and known joints, every frame shares one camera pose: fit_known_joints_window solves PnP over
the keypoints of many frames (and so many arm poses) at once, which averages detector noise and avoids the flips a
7-point PnP makes.

Either estimate can then be refined on what the camera actually measured, the 2D keypoints: pose (and, with unknown
joints, the joint angles) by robust least squares on the reprojection error, with priors that keep the joints near the
regressor's output and the keypoints near the lifted depth. The paper stops before this step.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.rigid_fit import pnp_ransac, robust_rigid_fit
from kp_pose_ros.core.transforms import invert_transform, make_transform, transform_points
from kp_pose_ros.robot.kinematics import RobotKinematics


@dataclass(frozen=True, eq=False)
class RobotPoseEstimate:
    """One frame's estimate. ``T_cam_base`` maps base-frame points into the camera optical frame; ``residuals_px``
    are the reprojection errors of the model keypoints under it (NaN where the keypoint was not detected)."""

    success: bool
    message: str
    T_cam_base: np.ndarray | None = None
    joints: np.ndarray | None = None
    keypoints_base: np.ndarray | None = None
    inliers: np.ndarray | None = None
    residuals_px: np.ndarray | None = None
    known_joints: bool = False

    @property
    def T_base_cam(self) -> np.ndarray:
        return invert_transform(self.T_cam_base)

    @property
    def keypoints_cam(self) -> np.ndarray:
        return transform_points(self.T_cam_base, self.keypoints_base)

    @property
    def mean_residual_px(self) -> float:
        r = self.residuals_px[self.inliers] if self.inliers is not None else np.array([])
        r = r[np.isfinite(r)]
        return float(r.mean()) if r.size else float('nan')


def _pinhole(points_cam: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Undistorted pixels of camera-frame points (compare with camera.undistort_pixels of measured pixels)."""
    z = points_cam[:, 2:3]
    return points_cam[:, :2] / np.where(z > 1e-6, z, np.nan) * [camera.fx, camera.fy] + [camera.cx, camera.cy]


def reprojection_residuals(T_cam_base: np.ndarray, keypoints_base: np.ndarray, pixels: np.ndarray,
                           camera: CameraModel) -> np.ndarray:
    """Pixel distance between the detected keypoints and the model keypoints projected under T (NaN if missing)."""
    projected = camera.project(transform_points(T_cam_base, keypoints_base))
    return np.linalg.norm(projected - np.asarray(pixels, float), axis=1)


def _finish(T_cam_base, joints, kinematics, pixels, camera, inliers, known, message=''):
    keypoints_base = kinematics.keypoints(joints)
    residuals = reprojection_residuals(T_cam_base, keypoints_base, pixels, camera)
    return RobotPoseEstimate(True, message, T_cam_base, np.asarray(joints, float), keypoints_base,
                             np.asarray(inliers, bool), residuals, known)


def fit_unknown_joints(points_cam: np.ndarray, joints: np.ndarray, pixels: np.ndarray, camera: CameraModel,
                       kinematics: RobotKinematics, inlier_threshold_m: float = 0.05,
                       weights: np.ndarray | None = None) -> RobotPoseEstimate:
    """Robust 3D-3D fit between FK(joints) in the base frame and the lifted keypoints (NaN rows = missing)."""
    keypoints_base = kinematics.keypoints(joints)
    fit = robust_rigid_fit(keypoints_base, points_cam, inlier_threshold_m, weights=weights)
    if not fit.success:
        return RobotPoseEstimate(False, f'3D-3D fit failed: {fit.message}', known_joints=False)
    return _finish(fit.T, joints, kinematics, pixels, camera, fit.inliers, False)


def fit_known_joints(joints: np.ndarray, pixels: np.ndarray, camera: CameraModel, kinematics: RobotKinematics,
                     reprojection_error_px: float = 15.0, points_cam: np.ndarray | None = None,
                     inlier_threshold_m: float = 0.05) -> RobotPoseEstimate:
    """PnP + RANSAC between FK(measured joints) and the 2D keypoints (NaN rows = not detected); 3D-3D when PnP has
    too few points and lifted 3D keypoints are given."""
    keypoints_base = kinematics.keypoints(joints)
    fit = pnp_ransac(keypoints_base, camera.undistort_pixels(pixels), camera.K, None, reprojection_error_px)
    if fit.success:
        return _finish(fit.T, joints, kinematics, pixels, camera, fit.inliers, True)
    if points_cam is not None:
        fallback = fit_unknown_joints(points_cam, joints, pixels, camera, kinematics, inlier_threshold_m)
        return replace(fallback, known_joints=True,
                       message=f'PnP failed ({fit.message}); used the 3D-3D fit' if fallback.success
                       else f'PnP failed ({fit.message}); {fallback.message}')
    return RobotPoseEstimate(False, f'PnP failed: {fit.message}', known_joints=True)


def fit_known_joints_window(window: Sequence[tuple[np.ndarray, np.ndarray]], joints: np.ndarray, pixels: np.ndarray,
                            camera: CameraModel, kinematics: RobotKinematics,
                            reprojection_error_px: float = 15.0) -> RobotPoseEstimate:
    """PnP + RANSAC over the keypoints of several frames seen by a static camera: `window` holds, per frame, the FK
    keypoints in the base frame (M, 3) and their undistorted detected pixels (M, 2); the result is reported for the
    current frame (`joints`, `pixels`)."""
    object_points = np.concatenate([w[0] for w in window])
    image_points = np.concatenate([w[1] for w in window])
    fit = pnp_ransac(object_points, image_points, camera.K, None, reprojection_error_px)
    if not fit.success:
        return RobotPoseEstimate(False, f'multi-frame PnP failed: {fit.message}', known_joints=True)
    residuals = reprojection_residuals(fit.T, kinematics.keypoints(joints), pixels, camera)
    return _finish(fit.T, joints, kinematics, pixels, camera, residuals < reprojection_error_px, True,
                   f'{len(window)} frames, {fit.num_inliers}/{len(object_points)} inlier keypoints')


def estimate_at_pose(T_cam_base: np.ndarray, joints: np.ndarray, pixels: np.ndarray, camera: CameraModel,
                     kinematics: RobotKinematics, reprojection_error_px: float = 15.0,
                     message: str = '') -> RobotPoseEstimate:
    """A known-joints estimate for a pose found by other means (e.g. depth alignment): residuals of the detected
    keypoints under it, inliers those within ``reprojection_error_px``."""
    residuals = reprojection_residuals(T_cam_base, kinematics.keypoints(joints), pixels, camera)
    return _finish(T_cam_base, joints, kinematics, pixels, camera, residuals < reprojection_error_px, True, message)


def window_entry(joints: np.ndarray, pixels: np.ndarray, camera: CameraModel,
                 kinematics: RobotKinematics) -> tuple[np.ndarray, np.ndarray]:
    """One frame's contribution to fit_known_joints_window: its detected keypoints only."""
    ok = np.all(np.isfinite(pixels), axis=1)
    return kinematics.keypoints(joints)[ok], camera.undistort_pixels(pixels[ok])


def refine_on_reprojection(estimate: RobotPoseEstimate, pixels: np.ndarray, camera: CameraModel,
                           kinematics: RobotKinematics, confidences: np.ndarray | None = None,
                           refine_joints: bool = False, joint_prior_rad: float = 0.15,
                           points_cam: np.ndarray | None = None, point_prior_m: float = 0.05,
                           pixel_scale: float = 3.0, max_evaluations: int = 60) -> RobotPoseEstimate:
    """Refine pose (and joints) to the detected 2D keypoints with a robust (soft-L1) loss.

    Only the estimate's inliers count. Priors: joints stay near the estimate's (sigma ``joint_prior_rad``); with
    ``points_cam`` the model keypoints stay near the lifted ones (sigma ``point_prior_m``), which fixes the depth a
    handful of 2D points leaves loose. Returns the input estimate unchanged when there is too little to refine on.
    """
    if not estimate.success:
        return estimate
    observed = camera.undistort_pixels(pixels)
    use = estimate.inliers & np.all(np.isfinite(observed), axis=1)
    if use.sum() < 4:
        return estimate
    w = np.sqrt(np.clip(np.asarray(confidences, float), 0.0, 1.0)) if confidences is not None else np.ones(len(use))
    q0 = estimate.joints
    rotvec0 = Rotation.from_matrix(estimate.T_cam_base[:3, :3]).as_rotvec()
    x0 = np.concatenate([rotvec0, estimate.T_cam_base[:3, 3], q0 if refine_joints else []])
    prior_ok = None if points_cam is None else np.all(np.isfinite(points_cam), axis=1) & estimate.inliers

    def unpack(x):
        T = make_transform(Rotation.from_rotvec(x[:3]).as_matrix(), x[3:6])
        return T, (x[6:] if refine_joints else q0)

    def residuals(x):
        T, q = unpack(x)
        cam = transform_points(T, kinematics.keypoints(q))
        r = [((_pinhole(cam[use], camera) - observed[use]) * w[use, None] / pixel_scale).ravel()]
        if refine_joints:
            r.append((q - q0) / joint_prior_rad)
        if prior_ok is not None and prior_ok.any():
            r.append(((cam[prior_ok] - points_cam[prior_ok]) / point_prior_m).ravel())
        return np.nan_to_num(np.concatenate(r), nan=1e3)

    lower = np.full(x0.size, -np.inf)
    upper = np.full(x0.size, np.inf)
    if refine_joints:
        lower[6:], upper[6:] = kinematics.lower, kinematics.upper
        x0[6:] = np.clip(x0[6:], kinematics.lower, kinematics.upper)
    result = least_squares(residuals, x0, bounds=(lower, upper), loss='soft_l1', f_scale=1.0,
                           max_nfev=max_evaluations, x_scale='jac')
    T, q = unpack(result.x)
    if not np.all(np.isfinite(T)) or T[2, 3] <= 0:
        return estimate
    refined = _finish(T, q, kinematics, pixels, camera, estimate.inliers, estimate.known_joints, estimate.message)
    # Keep the refinement only if it explains the detections better.
    before, after = estimate.residuals_px[use], refined.residuals_px[use]
    return refined if np.nanmedian(after) <= np.nanmedian(before) else estimate
