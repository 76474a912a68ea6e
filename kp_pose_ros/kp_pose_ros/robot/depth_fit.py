"""Camera pose from the robot's known joints and one RGB-D frame: keypoint hypotheses checked against the depth, then
the robot surface aligned with the depth (robot/depth_alignment.py).

Hypotheses come from the caller (PnP on the 2D keypoints, the previous frame's pose) and from every 3-keypoint
subset of the keypoints lifted by the measured depth. The depth vote picks among them, which survives what defeats
PnP alone: an arm cut by the image border, where the detector places its missing keypoints confidently on the wrong
link. Only then does ICP refine, from the few best. When nothing the keypoints propose aligns well (detector off,
keypoints all wrong), the robot's surface is registered into the depth alone (robot/depth_registration.py) and its
hypotheses go through the same coarse steps, vote and refinement.

A depth scale error (a stereo camera's depth is 1-2 % off) is estimated with the pose in the final refinement only:
the vote and the coarse steps take the scaled robot as a slightly nearer or farther one, which the refinement then
corrects. A caller that knows the scale (e.g. the consensus of a static camera's earlier frames) passes it instead.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Sequence

import numpy as np

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.rigid_fit import p3p_hypotheses, rigid_hypotheses
from kp_pose_ros.robot.depth_alignment import (
    COARSE_SCHEDULE,
    DEFAULT_SCHEDULE,
    STEPS_PER_STAGE,
    TRACK_SCHEDULE,
    TRACK_STEPS_PER_STAGE,
    DepthAlignment,
    align_to_depth,
    depth_agreement,
    depth_view,
    keypoints_from_depth,
    projected_bounds,
    scaled_pose,
)
from kp_pose_ros.robot.depth_registration import registration_hypotheses
from kp_pose_ros.robot.kinematics import RobotKinematics
from kp_pose_ros.robot.surface import RobotSurface


@dataclass(frozen=True)
class DepthFitConfig:
    """Knobs of RobotDepthFitter; the defaults are the ones the benchmark measured."""

    max_hypotheses: int = 200       # 3-keypoint subsets per hypothesis generator (all of them for up to 10 keypoints)
    coarse_hypotheses: int = 12     # best-voted hypotheses moved by a few coarse ICP steps, then voted on again
    refined_hypotheses: int = 2     # of those, the best refined by full ICP
    accept_coverage: float = 0.8    # a candidate whose alignment matches this much of the visible robot is taken
    vote_tolerance_m: float = 0.02
    min_coverage: float = 0.3
    min_correspondences: int = 100
    estimate_scale: bool = True     # estimate the depth scale error with the pose (fit's depth_scale=None)
    # No keypoint hypothesis aligned well: search the depth alone (robot/depth_registration.py, ~0.2 s).
    register_without_keypoints: bool = True
    # Candidates are refined in the image region where the first one puts the robot, grown by this much.
    roi_margin_px: float = 40.0


class RobotDepthFitter:
    """T(camera <- base) of a robot with known joints from its keypoints and an aligned depth image."""

    def __init__(self, surface: RobotSurface, kinematics: RobotKinematics, config: DepthFitConfig = DepthFitConfig()):
        if tuple(surface.link_names) != tuple(kinematics.link_names):
            raise ValueError(f'the surface model covers links {surface.link_names} but the kinematics '
                             f'{kinematics.link_names}: sample the surface for kinematics.link_names')
        self.surface = surface
        self.kinematics = kinematics
        self.config = config

    def fit(self, depth_m: np.ndarray, camera: CameraModel, joints: np.ndarray, pixels: np.ndarray,
            candidates: Sequence[np.ndarray | None] = (), *, depth_scale: float | None = None) -> DepthAlignment:
        """Best pose for this frame; ``pixels`` (N, 2) are the detected keypoints (NaN rows: not detected) and
        ``candidates`` poses T(camera <- base) to try first (the previous frame's, PnP's; None entries are skipped).

        A candidate whose alignment covers ``accept_coverage`` of the visible robot ends the search; otherwise the
        keypoint hypotheses are voted on by the depth and the best few refined. Among refined poses the one the
        depth agrees with most (1 cm, counting see-through against it) wins.

        ``depth_scale``: None estimates the depth scale error with the pose (when config.estimate_scale); a number is
        the known measured/true depth ratio, divided out of the depth. The result's T_cam_base is metric either way.
        """
        estimate_scale = self.config.estimate_scale
        if depth_scale is not None:
            if not (np.isfinite(depth_scale) and depth_scale > 0):
                raise ValueError(f'depth_scale must be a finite number > 0, got {depth_scale}')
            depth_m, estimate_scale = np.asarray(depth_m, dtype=np.float64) / depth_scale, False
        aligned = self._search(depth_m, camera, joints, pixels, candidates, estimate_scale)
        return aligned if depth_scale is None else replace(aligned, depth_scale=float(depth_scale))

    def _search(self, depth_m: np.ndarray, camera: CameraModel, joints: np.ndarray, pixels: np.ndarray,
                candidates: Sequence[np.ndarray | None], estimate_scale: bool) -> DepthAlignment:
        """fit on one depth image, the depth scale estimated in the refinement or taken as 1."""
        cfg = self.config
        points, normals = self.surface.in_base(self.kinematics.link_poses(joints))
        refined = []

        def refine(T, view, schedule=DEFAULT_SCHEDULE, steps=STEPS_PER_STAGE):
            aligned = align_to_depth([view], [points], [normals], camera, T, schedule=schedule, steps_per_stage=steps,
                                     min_correspondences=cfg.min_correspondences, min_coverage=cfg.min_coverage,
                                     estimate_scale=estimate_scale)
            if aligned.success:
                refined.append(aligned)
            return aligned

        candidates = [np.asarray(c, float) for c in candidates if c is not None and np.all(np.isfinite(c))]
        if candidates:
            # Tracking: only the image region around the robot where the first candidate puts it, and ICP from
            # close by. The whole image is read only when no candidate is confirmed.
            near = points @ candidates[0][:3, :3].T + candidates[0][:3, 3]
            view = depth_view(depth_m, camera, roi=projected_bounds(near, camera, cfg.roi_margin_px))
            for candidate in candidates:
                aligned = refine(candidate, view, TRACK_SCHEDULE, TRACK_STEPS_PER_STAGE)
                if aligned.success and aligned.coverage >= cfg.accept_coverage:
                    return aligned
        view = depth_view(depth_m, camera)
        refine = partial(refine, view=view)
        keypoints = self.kinematics.keypoints(joints)
        poses = np.concatenate([
            rigid_hypotheses(keypoints, keypoints_from_depth(view, pixels), cfg.max_hypotheses),
            p3p_hypotheses(keypoints, camera.undistort_pixels(pixels), camera.K, cfg.max_hypotheses)])
        if len(poses):
            # A hypothesis from three noisy keypoints may be 10 cm off and outvoted by a pose that lays the arm on the
            # floor; a few coarse ICP steps bring the right one onto the arm, where the see-through count then
            # separates it from the floor-lying ones.
            votes = depth_agreement(view, points, normals, camera, poses, cfg.vote_tolerance_m, see_through_weight=0)
            self._refine_best(view, points, normals, camera, [
                poses[i] for i in np.argsort(-votes, kind='stable')[:cfg.coarse_hypotheses] if votes[i] > 0], refine)
        registered = 0
        if cfg.register_without_keypoints and not any(a.coverage >= cfg.accept_coverage for a in refined):
            # The keypoints gave nothing the depth confirms (detector off, arm cut by the border, keypoints wrong):
            # the surface registered into the depth alone. Its own ranking is kept (re-voting loses the right one).
            found = registration_hypotheses(view, points, normals, camera, cfg.max_hypotheses)
            registered = len(found)
            self._refine_best(view, points, normals, camera, list(found[:cfg.coarse_hypotheses]), refine)
        if not refined:
            return DepthAlignment(False, f'none of {len(poses)} keypoint hypotheses, {registered} depth '
                                         f'registration hypotheses and {len(candidates)} candidates aligned with '
                                         'the depth')
        measured = np.array([scaled_pose(a.T_cam_base, a.depth_scale) for a in refined])
        final = depth_agreement(view, points, normals, camera, measured, 0.01)
        return refined[int(np.argmax(final))]

    def _refine_best(self, view, points, normals, camera, shortlist, refine) -> None:
        """A few coarse ICP steps on each shortlisted pose, a see-through-penalised vote, full ICP (``refine``) on
        the best ``refined_hypotheses``."""
        cfg = self.config
        coarse = [align_to_depth([view], [points], [normals], camera, T, schedule=COARSE_SCHEDULE,
                                 steps_per_stage=2, min_correspondences=0, min_coverage=0.0) for T in shortlist]
        coarse = np.array([a.T_cam_base for a in coarse if a.success]).reshape(-1, 4, 4)
        votes = depth_agreement(view, points, normals, camera, coarse, cfg.vote_tolerance_m)
        for index in np.argsort(-votes, kind='stable')[:cfg.refined_hypotheses]:
            refine(coarse[index])
