"""Camera pose hypotheses from the depth alone: the robot's surface model, placed by forward kinematics at the measured
joints, registered globally into the depth point cloud, for when the keypoint hypotheses fail (detector off, arm
mostly out of view, keypoints all wrong). The poses go on to ICP (robot/depth_alignment.py) like any other.

Method: a coarse pose search that uses what every installation has, a robot standing upright on a plane (floor or
table) that the camera sees.
- Scene and model on a 2 cm voxel grid (even density whatever the distance).
- The dominant planes of the scene (RANSAC) are the support candidates; the base's z axis is taken normal to one of
  them, which leaves four unknowns: the yaw about it and a translation.
- Hough voting over those four: a scene point above the plane and a model point whose normals tilt alike from the
  vertical fix the yaw (the turn between their horizontal normals) and the translation that lays one on the other.
  One vote per such pair; the fullest cells of (5 deg yaw, 4 cm translation), each pose the mean of its votes,
  are the hypotheses: those with the base on the plane first (SEATED_M), each group ranked by ``depth_agreement``
  (2 cm, see-through counted against).

Why not descriptor matching + RANSAC: measured first, FPFH-style histograms (radius 5 cm, 1.5 cm voxels) matched
scene to model were right for 1-2 % of the correspondences on these arms (smooth, alike links under a stereo
sensor's noise), barely above chance, so 3-point RANSAC almost never drew a clean sample. The plane removes two
rotational unknowns and normal-pair votes need no descriptor at all.

Measured on 48 frames of 24 scenes (seeds 6000-6023, 640x480, FOV 62-93 deg, cameras at 0.8-1.8 m, 3 distractors,
the arm on 2-14 % of the image, the RealSense D435 sensor model), each followed by COARSE_SCHEDULE ICP on the first
12 and full ICP on the best 2 of those by the depth vote: 44/48 ended where ICP started from the true pose ends
(within 5 mm); 22/24 on seeds 6012-6023, not used while tuning. The other four show so little of the arm (2-5 % of
the image) that ICP from the truth fails or lands 10 cm off too. A hypothesis within 10 cm / 10 deg was first in
the list on 47/48. 30/48 ended within 2 cm / 2 deg of the truth: the simulated sensor's per-unit bias puts
single-frame ICP 2-4.5 cm off even from the truth on the rest.
0.1-0.5 s per frame on 2 CPU cores shared with other work (median 0.2 s; voting 40 %, the depth vote 35 %).
Keep the order: re-ranking these by ``depth_agreement`` without the see-through count put the right pose below the
12th on 5/48 frames.

Limits: the robot must stand on a plane the camera sees, with its base z axis normal to it (a wall- or
ceiling-mounted arm, or a tilted base, is not found), and its base frame's origin on that plane to be ranked first;
an arm covering under ~3 % of the image is often missed.
"""
from __future__ import annotations

import numpy as np

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.robot.depth_alignment import DepthView, depth_agreement

VOXEL_M = 0.02
PLANE_TOLERANCE_M = 0.015
_YAW_BINS = 72
CELL_M = 0.04
# Poses that put the base frame's origin this close to the plane come first: a base frame has its origin on the
# mounting surface (the Panda's, ROS-Industrial's base_link), and a pose that lays the arm on a wall or a box side
# can outvote the truth when little of the arm is in view.
SEATED_M = 0.05
# Scene points above the plane that vote (a random subset beyond this): bounds the time at ~0.3 s.
_MAX_SCENE_POINTS = 500
# Pairs vote when the vertical components of their normals differ by less than this and both normals have a
# horizontal component of at least _MIN_HORIZONTAL (else the yaw between them is undetermined).
_TILT_AGREEMENT = 0.2
_MIN_HORIZONTAL = 0.5


def registration_hypotheses(view: DepthView, points_base: np.ndarray, normals_base: np.ndarray,
                            camera: CameraModel, max_hypotheses: int = 200, seed: int = 0) -> np.ndarray:
    """Candidate T(camera <- base), (H, 4, 4), best first, found without keypoints; empty when the depth holds too
    little to register against (no supporting plane, nothing above it)."""
    rng = np.random.default_rng(seed)
    scene, scene_normals = _voxel_downsample(view.cloud, view.cloud_normals, VOXEL_M)
    model, model_normals = _voxel_downsample(points_base, normals_base, VOXEL_M)
    poses, seated = [], []
    for T_cam_plane in support_planes(scene, scene_normals, rng):
        above, above_normals = _above_plane(scene, scene_normals, T_cam_plane, model[:, 2].max() - model[:, 2].min())
        if len(above) > _MAX_SCENE_POINTS:
            keep = rng.choice(len(above), _MAX_SCENE_POINTS, replace=False)
            above, above_normals = above[keep], above_normals[keep]
        for T in _yaw_translation_votes(above, above_normals, model, model_normals):
            poses.append(T_cam_plane @ T)
            seated.append(abs(T[2, 3]) < SEATED_M)
    if not poses:
        return np.zeros((0, 4, 4))
    poses = np.array(poses)
    votes = depth_agreement(view, points_base, normals_base, camera, poses, 0.02)
    return poses[np.lexsort((-votes, ~np.array(seated)))[:max_hypotheses]]


def _voxel_downsample(points, normals, voxel):
    """Mean point and normal per occupied voxel: even density, so votes do not depend on distance."""
    if not len(points):
        return points.reshape(0, 3), normals.reshape(0, 3)
    keys = np.floor(points / voxel).astype(np.int64)
    _, cell = np.unique(keys, axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    count = np.bincount(cell)
    mean = np.stack([np.bincount(cell, points[:, k]) for k in range(3)], axis=1) / count[:, None]
    normal = np.stack([np.bincount(cell, normals[:, k]) for k in range(3)], axis=1)
    length = np.linalg.norm(normal, axis=1)
    keep = length > 1e-6
    return mean[keep], normal[keep] / length[keep, None]


def support_planes(points, normals, rng, planes=2, samples=200, min_share=0.1):
    """Frames T(camera <- plane) of up to ``planes`` dominant planes (RANSAC), z up towards the camera."""
    frames = []
    for _ in range(planes):
        if len(points) < 3:
            break
        triples = points[rng.integers(0, len(points), (samples, 3))]
        n = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
        length = np.linalg.norm(n, axis=1)
        n = n / np.where(length > 0, length, np.inf)[:, None]
        offset = np.sum(n * triples[:, 0], axis=1)
        on = (np.abs(points @ n.T - offset) < PLANE_TOLERANCE_M) & (np.abs(normals @ n.T) > 0.9)
        best = int(np.argmax(on.sum(axis=0)))
        if on[:, best].sum() < min_share * len(points):
            break
        up, origin = n[best], points[on[:, best]].mean(axis=0)
        if up @ origin > 0:  # the camera sees the plane's upper side
            up = -up
        frames.append(_frame(up, origin))
        points, normals = points[~on[:, best]], normals[~on[:, best]]
    return frames


def _frame(up, origin):
    """A transform T(camera <- plane) with the plane's z along ``up`` and its origin at ``origin``."""
    x = np.cross([0.0, 1.0, 0.0], up) if abs(up[1]) < 0.9 else np.cross([1.0, 0.0, 0.0], up)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(up, x), up], axis=1)
    T[:3, 3] = origin
    return T


def _above_plane(points, normals, T_cam_plane, height):
    """Points (in the plane frame) between just above the plane and the robot's height above it."""
    R, t = T_cam_plane[:3, :3], T_cam_plane[:3, 3]
    local = (points - t) @ R
    keep = (local[:, 2] > PLANE_TOLERANCE_M) & (local[:, 2] < height + 0.5)
    return local[keep], normals[keep] @ R


def _yaw_translation_votes(scene, scene_normals, model, model_normals, peaks=100):
    """Poses T(plane <- base) with the base upright on the plane, by Hough voting: a scene point and a model point
    whose normals tilt alike from the vertical fix the yaw (the turn between their horizontal normals) and the
    translation that lays one on the other; the cells of (yaw, translation) with the most votes win, each pose the
    mean of its votes. Translations are of the model's centre, which a yaw error moves least."""
    horizontal_s = np.hypot(scene_normals[:, 0], scene_normals[:, 1])
    horizontal_m = np.hypot(model_normals[:, 0], model_normals[:, 1])
    pairs = ((np.abs(scene_normals[:, None, 2] - model_normals[None, :, 2]) < _TILT_AGREEMENT)
             & (horizontal_s[:, None] > _MIN_HORIZONTAL) & (horizontal_m[None, :] > _MIN_HORIZONTAL))
    si, mi = np.nonzero(pairs)
    if not len(si):
        return []
    centre = model.mean(axis=0)
    yaw = (np.arctan2(scene_normals[si, 1], scene_normals[si, 0])
           - np.arctan2(model_normals[mi, 1], model_normals[mi, 0]))
    yaw_bin = np.round(yaw / (2 * np.pi / _YAW_BINS)).astype(np.int64) % _YAW_BINS
    binned = _translations(scene[si], model[mi] - centre, yaw_bin * (2 * np.pi / _YAW_BINS))
    cell = np.floor(binned / CELL_M).astype(np.int64)
    cell -= cell.min(axis=0)
    size = cell.max(axis=0) + 1
    key = ((yaw_bin * size[0] + cell[:, 0]) * size[1] + cell[:, 1]) * size[2] + cell[:, 2]
    keys, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    top = np.argsort(-count, kind='stable')[:peaks]
    rank = np.full(len(keys), -1)
    rank[top] = np.arange(len(top))
    voter = rank[inverse.reshape(-1)]
    chosen = voter >= 0
    mean_yaw = np.arctan2(np.bincount(voter[chosen], np.sin(yaw[chosen]), len(top)),
                          np.bincount(voter[chosen], np.cos(yaw[chosen]), len(top)))
    raw = _translations(scene[si[chosen]], model[mi[chosen]] - centre, yaw[chosen])
    mean_t = np.stack([np.bincount(voter[chosen], raw[:, k], len(top)) for k in range(3)], axis=1)
    mean_t /= count[top][:, None]
    poses = []
    for a, t in zip(mean_yaw, mean_t):
        T = np.eye(4)
        T[:3, :3] = _yaw_matrix(a)
        T[:3, 3] = t - T[:3, :3] @ centre
        poses.append(T)
    return poses


def _yaw_matrix(yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _translations(scene, model, yaw):
    """scene - Rz(yaw) model, per row."""
    c, s = np.cos(yaw), np.sin(yaw)
    return scene - np.stack([c * model[:, 0] - s * model[:, 1], s * model[:, 0] + c * model[:, 1], model[:, 2]], axis=1)
