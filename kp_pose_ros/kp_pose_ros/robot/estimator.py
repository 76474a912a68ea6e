"""robot_calib's whole per-frame policy, ROS-free, so that the pose fitting node, the benchmark and
`kp-pose eval robot_calib` run the same thing and what is measured is what runs.

Per frame, from what the frame offers:
- known joints (the robot's /joint_states at the image stamp) and an aligned depth image: the robot's surface at
  those joints aligned with the depth (robot/depth_fit.py), the keypoints only proposing poses;
- known joints, no depth, a static camera: PnP over the keypoints of the last `static_camera_frames` frames at once
  (many arm poses share one camera pose), the window reset when the camera moved;
- known joints, per frame: PnP + RANSAC, refined on the reprojection error;
- unknown joints: lifted 3D keypoints (given, from the lifter node, or lifted here when a lifter is attached)
  -> joint angles -> forward kinematics -> robust 3D-3D fit -> joint and pose refinement on the 2D keypoints.
The estimator keeps the state that spans frames (the static-camera window, the previous depth pose, the previous
lifted keypoints); reset() forgets it, e.g. when the robot model changes.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.robot.depth_alignment import DepthAlignment
from kp_pose_ros.robot.depth_fit import RobotDepthFitter
from kp_pose_ros.robot.kinematics import RobotKinematics
from kp_pose_ros.robot.lifting import JointRegressor
from kp_pose_ros.robot.pose import (
    RobotPoseEstimate,
    estimate_at_pose,
    fit_known_joints,
    fit_known_joints_window,
    fit_unknown_joints,
    refine_on_reprojection,
    reprojection_residuals,
    window_entry,
)

JOINT_MODES = ('auto', 'known', 'unknown')
# A window frame needs this many detected keypoints to tell whether it agrees with the window's camera pose.
_MIN_KEYPOINTS_TO_COMPARE = 5
# Lifted keypoints the model filled in (not observed) still count this much in the unknown-joints 3D-3D fit.
_FILLED_IN_WEIGHT = 0.1


@dataclass(frozen=True)
class EstimatorConfig:
    """The policy's knobs; the node exposes each as a parameter of the same name."""

    joints_mode: str = 'auto'
    min_keypoint_confidence: float = 0.3
    inlier_threshold_m: float = 0.05
    reprojection_error_px: float = 15.0
    static_camera_frames: int = 30
    refine: bool = True
    depth_alignment: bool = True
    # Depth: try the previous frame's pose first (a static camera's pose does not change).
    track_previous_pose: bool = True
    # Static window: this many frames in a row whose keypoints disagree with the window's pose (median residual
    # above reprojection_error_px) while fitting well on their own mean the camera moved; the window restarts.
    camera_moved_frames: int = 3
    # Unknown joints with an attached lifter: start each lift from the previous frame's (RoboKeyGen's online mode).
    online_lifting: bool = True

    def __post_init__(self) -> None:
        if self.joints_mode not in JOINT_MODES:
            raise ValueError(f'joints_mode must be one of {JOINT_MODES}, got {self.joints_mode!r}')
        if self.static_camera_frames < 0 or self.camera_moved_frames < 1:
            raise ValueError('static_camera_frames must be >= 0 and camera_moved_frames >= 1')


@dataclass(frozen=True, eq=False)
class Observation:
    """What one frame offers. ``pixels`` (N, 2) detected keypoints (NaN: not detected) with ``confidences`` (N,);
    ``joints`` the measured joint positions at the image stamp (None: unknown); ``depth_m`` an aligned depth image
    (None: none); ``lifted`` (N, 3) camera-frame keypoints from a lifter with ``lifted_scores`` (N,; 0 for keypoints
    the lifter filled in)."""

    camera: CameraModel
    pixels: np.ndarray
    confidences: np.ndarray
    joints: np.ndarray | None = None
    depth_m: np.ndarray | None = None
    lifted: np.ndarray | None = None
    lifted_scores: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One frame's outcome. ``estimate`` is None or unsuccessful when the frame gave no pose; ``skipped`` then names
    why (a drop reason: no_joint_states, incomplete_3d, no_pose). ``depth_problem`` names why an offered depth image
    was not used (bad_depth, depth_alignment_failed) with ``message``; ``events`` what changed the estimator's state
    (window_reset: the camera moved). ``stage_ms``: wall time per stage."""

    estimate: RobotPoseEstimate | None
    skipped: str | None = None
    message: str = ''
    aligned: DepthAlignment | None = None
    depth_problem: str | None = None
    events: tuple[str, ...] = ()
    stage_ms: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.estimate is not None and self.estimate.success


class RobotCalibEstimator:
    """T(camera <- robot base) per frame. ``regressor`` (lifted keypoints -> joints) is needed for unknown joints,
    ``depth_fitter`` for the depth alignment, ``lifter`` only where nothing upstream lifts the keypoints."""

    def __init__(self, kinematics: RobotKinematics, config: EstimatorConfig = EstimatorConfig(),
                 regressor: JointRegressor | None = None, depth_fitter: RobotDepthFitter | None = None,
                 lifter=None) -> None:
        self.kinematics = kinematics
        self.config = config
        self.regressor = regressor
        self.depth_fitter = depth_fitter
        self.lifter = lifter
        self.reset()

    def reset(self) -> None:
        """Forget everything learnt from earlier frames."""
        self.window: deque = deque(maxlen=max(1, self.config.static_camera_frames))
        self._disagreeing: list = []
        self._window_pose: np.ndarray | None = None
        self.previous_depth_pose: np.ndarray | None = None
        self.previous_lifted: np.ndarray | None = None

    def set_config(self, config: EstimatorConfig) -> None:
        """New knobs; the window keeps its newest frames when it shrinks."""
        self.config = config
        self.window = deque(self.window, maxlen=max(1, config.static_camera_frames))

    def estimate(self, obs: Observation) -> FrameResult:
        cfg = self.config
        px = np.array(obs.pixels, dtype=np.float64)
        conf = np.asarray(obs.confidences, dtype=np.float64)
        px[~(conf >= cfg.min_keypoint_confidence)] = np.nan
        joints = obs.joints if cfg.joints_mode != 'unknown' else None
        if joints is None and cfg.joints_mode == 'known':
            return FrameResult(None, 'no_joint_states', 'joints_mode is "known" but no joint state at this image')
        stage_ms: dict = {}
        started = time.perf_counter()
        if joints is not None:
            result = self._known_joints(obs, np.asarray(joints, float), px, conf, stage_ms)
        else:
            result = self._unknown_joints(obs, px, conf, stage_ms)
        stage_ms['total'] = (time.perf_counter() - started) * 1e3
        return result

    # ------------------------------------------------------------------ known joints
    def _known_joints(self, obs, joints, px, conf, stage_ms) -> FrameResult:
        cfg, kin, camera = self.config, self.kinematics, obs.camera
        started = time.perf_counter()
        events = ()
        use_depth = cfg.depth_alignment and self.depth_fitter is not None and obs.depth_m is not None
        windowed = cfg.static_camera_frames > 0
        if windowed:
            events = self._track_window(joints, px, camera)
            estimate = fit_known_joints_window(self.window, joints, px, camera, kin, cfg.reprojection_error_px)
            self._window_pose = estimate.T_cam_base if estimate.success else None
        else:
            lifted = None if obs.lifted is None else np.where(
                (np.asarray(obs.lifted_scores) > 0)[:, None], obs.lifted, np.nan)
            estimate = fit_known_joints(joints, px, camera, kin, cfg.reprojection_error_px, points_cam=lifted,
                                        inlier_threshold_m=cfg.inlier_threshold_m)
        stage_ms['keypoint_fit'] = (time.perf_counter() - started) * 1e3
        # A single frame's refinement would pull a window's pose back towards that frame's noise.
        refine = cfg.refine and not windowed
        if use_depth:
            return self._with_depth(obs, joints, px, conf, estimate, refine, stage_ms, events)
        return self._finish(self._refined(estimate, px, conf, camera) if refine else estimate, stage_ms,
                            events=events)

    def _track_window(self, joints, px, camera) -> tuple[str, ...]:
        """Add the frame to the static-camera window; restart the window from the recent frames when they keep
        disagreeing with its pose (the last frame's window estimate) while agreeing with their own (the camera was
        moved). A frame that agrees costs no extra fit."""
        cfg, kin = self.config, self.kinematics
        entry = window_entry(joints, px, camera, kin)
        if self._window_pose is not None and len(self.window) >= cfg.camera_moved_frames \
                and len(entry[0]) >= _MIN_KEYPOINTS_TO_COMPARE:
            residuals = reprojection_residuals(self._window_pose, kin.keypoints(joints), px, camera)
            disagrees = np.nanmedian(residuals) > cfg.reprojection_error_px
            if disagrees:
                own = fit_known_joints(joints, px, camera, kin, cfg.reprojection_error_px)
                disagrees = own.success and np.nanmedian(own.residuals_px[own.inliers]) < cfg.reprojection_error_px / 3
            self._disagreeing = self._disagreeing + [entry] if disagrees else []
        if len(self._disagreeing) >= cfg.camera_moved_frames:
            self.window.clear()
            self.window.extend(self._disagreeing)
            self.previous_depth_pose = None
            self._disagreeing = []
            return ('window_reset',)
        self.window.append(entry)
        return ()

    def _with_depth(self, obs, joints, px, conf, estimate, refine, stage_ms, events) -> FrameResult:
        """The depth-aligned pose, the keypoint candidates seeding it; the keypoint estimate when the depth is
        unusable or does not align."""
        cfg, camera = self.config, obs.camera
        started = time.perf_counter()
        previous = self.previous_depth_pose if cfg.track_previous_pose else None
        try:
            aligned = self.depth_fitter.fit(obs.depth_m, camera, joints, px, candidates=(
                previous, estimate.T_cam_base if estimate.success else None))
        except ValueError as exc:
            aligned, problem = None, ('bad_depth', f'depth image unusable: {exc}')
        else:
            problem = None if aligned.success else (
                'depth_alignment_failed', f'depth alignment failed: {aligned.message}; keypoints only')
        stage_ms['depth_fit'] = (time.perf_counter() - started) * 1e3
        if problem is not None:
            fallback = self._refined(estimate, px, conf, camera) if refine else estimate
            return self._finish(fallback, stage_ms, depth_problem=problem[0], message=problem[1], events=events)
        self.previous_depth_pose = aligned.T_cam_base
        estimate = estimate_at_pose(aligned.T_cam_base, joints, px, camera, self.kinematics,
                                    cfg.reprojection_error_px, f'depth: {aligned.message}')
        return self._finish(estimate, stage_ms, aligned=aligned, events=events)

    def _refined(self, estimate, px, conf, camera):
        return refine_on_reprojection(estimate, px, camera, self.kinematics, confidences=conf) \
            if estimate.success else estimate

    # ------------------------------------------------------------------ unknown joints
    def _unknown_joints(self, obs, px, conf, stage_ms) -> FrameResult:
        cfg, kin, camera = self.config, self.kinematics, obs.camera
        if self.regressor is None:
            return FrameResult(None, 'no_joint_states', 'no joint state at this image and no joint model')
        points, scores = obs.lifted, obs.lifted_scores
        if points is None:
            if self.lifter is None:
                return FrameResult(None, 'incomplete_3d', 'no lifted keypoints and no lifter')
            started = time.perf_counter()
            lifted = self._lift(px, conf, camera)
            stage_ms['lift'] = (time.perf_counter() - started) * 1e3
            if lifted is None:
                return FrameResult(None, 'too_few_keypoints', 'too few keypoints to lift this frame',
                                   stage_ms=stage_ms)
            points, scores = lifted
        points = np.asarray(points, float)
        if not np.all(np.isfinite(points)):
            return FrameResult(None, 'incomplete_3d', 'lifted keypoints incomplete and no joint state',
                               stage_ms=stage_ms)
        started = time.perf_counter()
        joints = self.regressor.predict(points)
        estimate = fit_unknown_joints(points, joints, px, camera, kin, cfg.inlier_threshold_m,
                                      weights=np.asarray(scores, float) + _FILLED_IN_WEIGHT)
        if cfg.refine and estimate.success:
            estimate = refine_on_reprojection(estimate, px, camera, kin, confidences=conf, refine_joints=True,
                                              points_cam=points)
        stage_ms['joints_and_fit'] = (time.perf_counter() - started) * 1e3
        return self._finish(estimate, stage_ms)

    def _lift(self, px, conf, camera):
        """(points, scores) from the attached lifter, or None when too few keypoints; online from the previous."""
        valid = np.all(np.isfinite(px), axis=1)
        previous = self.previous_lifted if self.config.online_lifting else None
        try:
            result = self.lifter.lift(self.lifter.condition_of(px, camera), valid, previous)
        except ValueError:
            self.previous_lifted = None
            return None
        self.previous_lifted = result.points
        return result.points, np.where(valid, conf, 0.0)

    def _finish(self, estimate, stage_ms, aligned=None, depth_problem=None, message='', events=()) -> FrameResult:
        if not estimate.success:
            return FrameResult(estimate, 'no_pose', f'no pose this frame: {estimate.message}', aligned,
                               depth_problem, events, stage_ms)
        return FrameResult(estimate, None, message, aligned, depth_problem, events, stage_ms)
