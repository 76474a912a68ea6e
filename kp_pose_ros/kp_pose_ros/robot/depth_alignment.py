"""Camera pose refined on the depth image: the robot's surface model, placed by forward kinematics, is aligned with the
measured depth by robust point-to-plane ICP.

Keypoints put the camera within centimetres; the depth of thousands of surface points pins it to millimetres, and
over many frames of a static camera (one shared pose, many arm configurations) the alignment averages the sensor's
noise instead of sharing one view's keypoint bias. RoboKeyGen works on RGB alone; an RGB-D camera measures more.

Per iteration: model points facing the camera, inside the image and not hidden behind a nearer measured surface are
matched to their nearest measured point (k-d tree over the depth image's points); residuals are
point-to-plane along the measured normals, weighted by a Huber kernel; one Gauss-Newton step on the pose. The match
radius shrinks over the schedule, so a first estimate centimetres off still converges while the final fit ignores
everything that is not the robot (floor, clutter, the other side of a link).

Real sensors add three faults that break this (sim/depth_sensors.py models them):

- A depth scale error: a stereo camera's depth is (1 + s) times the truth, |s| up to 2 % (D435 datasheet) from its
  baseline/focal calibration. A pose further away explains most of a scaled cloud, so 1.5 % moved the calibration by
  3-4 cm. The robot's known metric size makes s observable: align_to_depth can estimate it with the pose.
- Flying pixels at depth edges, between the foreground and the background: depth_view drops both sides of every
  depth discontinuity.
- Holes (dark, specular, grazing surfaces, occlusion shadows): a model point on a pixel without depth is neither
  matched nor counted as visible, so holes do not lower the coverage that tells a right pose from a wrong one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.camera import CameraModel

# Correspondence radius (m) per stage, coarse to fine, and Gauss-Newton steps per stage.
DEFAULT_SCHEDULE = (0.08, 0.04, 0.02, 0.01)
# Enough to pull a rough hypothesis onto the arm before hypotheses are compared.
COARSE_SCHEDULE = (0.08, 0.04)
# From a candidate already within a centimetre or two (the previous frame's pose of a static camera, a good PnP).
TRACK_SCHEDULE = (0.04, 0.02, 0.01)
TRACK_STEPS_PER_STAGE = 3
STEPS_PER_STAGE = 4
# Prior std of the depth scale error s: a D435's datasheet bound (2 %), wide enough to leave any real unit free.
SCALE_PRIOR_STD = 0.02
# Match against every `stride`-th depth pixel: a quarter of the points, the same pose.
DEFAULT_STRIDE = 2
_NORMAL_BASELINE_PX = 2
# Relative depth jump across a 3x3 neighbourhood that marks a depth edge (see _depth_edges).
_EDGE_JUMP_REL = 0.04


@dataclass(frozen=True, eq=False)
class DepthView:
    """One depth image: camera-frame points (H, W, 3; NaN where there is no depth) for visibility look-ups, and
    every ``stride``-th valid point with its normal in a k-d tree for matching, built once and shared by every
    hypothesis and iteration."""

    points: np.ndarray
    cloud: np.ndarray
    cloud_normals: np.ndarray
    tree: cKDTree


@dataclass(frozen=True, eq=False)
class DepthAlignment:
    """Result of align_to_depth. ``coverage``: fraction of the visible model points that found a measured point at
    the final radius — low coverage means the depth does not show the robot where the pose puts it.
    ``depth_scale``: the measured depth over the true depth (1 + s), estimated or assumed; ``T_cam_base`` is metric
    (the true pose), the depth image shows the robot at ``depth_scale`` times its distance."""

    success: bool
    message: str
    T_cam_base: np.ndarray | None = None
    correspondences: int = 0
    rms_m: float = float('nan')
    coverage: float = 0.0
    depth_scale: float = 1.0


def depth_view(depth_m: np.ndarray, camera: CameraModel, stride: int = DEFAULT_STRIDE,
               roi: tuple[int, int, int, int] | None = None) -> DepthView:
    """Back-project a depth image (metres along the optical axis, aligned to ``camera``) and estimate normals.

    ``roi`` (u0, v0, u1, v1; pixel bounds, end exclusive) limits the view to where the robot can be: the rest of
    the image counts as holes. Filtering and the k-d tree are most of a frame's time, and a robot often covers a
    fifth of the image.

    Non-finite or non-positive depth is treated as missing, and so are depth edges (_depth_edges). A stereo
    camera's per-pixel noise at 1.5 m (~5 mm) is as large as the spacing of neighbouring points, so the depth is
    median-filtered (5x5 over the valid pixels, keeps the edges) and normals are taken over a 4-pixel baseline; they
    face the camera.
    """
    depth = np.asarray(depth_m)
    if depth.shape != (camera.height, camera.width):
        raise ValueError(f'depth image is {depth.shape[1]}x{depth.shape[0]} but the camera model is '
                         f'{camera.width}x{camera.height}: depth must be aligned to this camera')
    if int(stride) != stride or stride < 1:
        raise ValueError(f'stride must be a positive integer, got {stride}')
    u0, v0, u1, v1 = _roi_bounds(roi, camera, stride)
    depth = depth[v0:v1, u0:u1]
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    edges = _depth_edges(depth, valid)
    valid &= ~edges
    # Normals from the median surface, which also spans small holes (differences need both neighbours: with 25 %
    # random holes only half the points had both); the points themselves only where the depth is valid.
    crop = _rays(camera)[v0:v1, u0:u1] * _valid_median(depth, valid, edges)[..., None]
    normals = _grid_normals(crop, stride).reshape(-1, 3)
    np.copyto(crop, np.nan, where=~valid[..., None])
    cloud = crop[::stride, ::stride].reshape(-1, 3)
    if (u0, v0, u1, v1) == (0, 0, camera.width, camera.height):
        points = crop
    else:
        points = np.full((camera.height, camera.width, 3), np.nan)
        points[v0:v1, u0:u1] = crop
    length = np.linalg.norm(normals, axis=1)
    ok = np.isfinite(length) & (length > 0) & np.all(np.isfinite(cloud), axis=1)
    cloud, normals = cloud[ok], normals[ok] / length[ok, None]
    normals *= -np.sign(np.sum(normals * cloud, axis=1))[:, None]
    points.flags.writeable = False
    return DepthView(points, cloud, normals, cKDTree(cloud))


def _roi_bounds(roi, camera: CameraModel, stride: int) -> tuple[int, int, int, int]:
    """The region clipped to the image, its start on the stride grid (so the cloud samples the same pixels as a
    full view would)."""
    if roi is None:
        return 0, 0, camera.width, camera.height
    u0, v0, u1, v1 = (int(round(b)) for b in roi)
    u0, v0 = max(0, u0) // stride * stride, max(0, v0) // stride * stride
    u1, v1 = min(camera.width, u1), min(camera.height, v1)
    if u1 <= u0 or v1 <= v0:
        raise ValueError(f'region of interest {roi} lies outside the {camera.width}x{camera.height} image')
    return u0, v0, u1, v1


def projected_bounds(points_cam: np.ndarray, camera: CameraModel, margin_px: float) -> tuple[int, int, int, int]:
    """Pixel bounds (u0, v0, u1, v1) of camera-frame points in front of the camera, grown by ``margin_px`` and
    clipped to the image; the whole image when none lands in it."""
    px = camera.project(points_cam[points_cam[:, 2] > 0.05])
    px = px[np.all(np.isfinite(px), axis=1)]
    if len(px) == 0:
        return 0, 0, camera.width, camera.height
    low = np.maximum(np.floor(px.min(axis=0) - margin_px), 0).astype(int)
    high = np.minimum(np.ceil(px.max(axis=0) + margin_px + 1), [camera.width, camera.height]).astype(int)
    if np.any(high <= low):
        return 0, 0, camera.width, camera.height
    return int(low[0]), int(low[1]), int(high[0]), int(high[1])


def _grid_normals(surface: np.ndarray, stride: int) -> np.ndarray:
    """Unnormalised normals of every ``stride``-th pixel: the cross product of the surface's differences between
    the pixels _NORMAL_BASELINE_PX to either side (NaN at the border), computed on those pixels only."""
    h = _NORMAL_BASELINE_PX
    grid = surface[::stride, ::stride]
    du = np.full_like(grid, np.nan)
    dv = np.full_like(grid, np.nan)
    cols = _inner(surface.shape[1], stride)
    rows = _inner(surface.shape[0], stride)
    du[:, cols] = surface[::stride, _pixels(cols, stride, h)] - surface[::stride, _pixels(cols, stride, -h)]
    dv[rows] = surface[_pixels(rows, stride, h), ::stride] - surface[_pixels(rows, stride, -h), ::stride]
    return np.cross(du, dv)


def _inner(size: int, stride: int) -> slice:
    """Grid indices j whose pixel j * stride has both neighbours _NORMAL_BASELINE_PX away inside the image."""
    h = _NORMAL_BASELINE_PX
    return slice(-(-h // stride), -(-(size - h) // stride))


def _pixels(grid: slice, stride: int, shift: int) -> slice:
    """The pixels of a slice of grid indices, shifted by ``shift``."""
    return slice(grid.start * stride + shift, (grid.stop - 1) * stride + shift + 1, stride)


def _depth_edges(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels within 2 px of a depth discontinuity: their 3x3 neighbourhood spans more than _EDGE_JUMP_REL of
    its nearest depth, and one pixel around those.

    A sensor mixes foreground and background there: stereo matching windows straddle the edge (D435: fringes of
    1-3 px), a ToF pixel sums both returns. Such flying pixels lie between the surfaces, where ICP takes them for
    the robot's silhouette, and their normals point sideways. Holes do not count as a jump. The threshold sits above
    a D435's noise (3x3 range ~3 sigma, 2 % at 2 m) and slanted surfaces (1.2 % at 75 deg incidence, 615 px focal).
    """
    kernel = np.ones((3, 3), np.uint8)
    near = cv2.erode(np.where(valid, depth, np.float32(np.inf)), kernel)
    far = cv2.dilate(depth, kernel)
    edges = (far - near > _EDGE_JUMP_REL * near).view(np.uint8)
    return cv2.dilate(edges, kernel).astype(bool)


def _valid_median(depth: np.ndarray, valid: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """5x5 median of the valid pixels (NaN on depth edges and where most of the window is invalid).

    cv2's median counts holes as values. Filled with 0 they pull the median towards the camera (a plane at 1.5 m
    with a D435's 8 mm noise came 1.1 / 2.6 / 4.5 mm too near with 10 / 20 / 30 % random holes); filled with a huge
    value, away from it. With k holes in the window the two medians are the valid pixels' order statistics 13 - k
    and 13, symmetric about their median, so their mean is unbiased (0.0 mm there).
    """
    huge = np.float32(1e6)
    low = cv2.medianBlur(np.where(valid, depth, np.float32(0.0)), 5)
    high = cv2.medianBlur(np.where(valid, depth, huge), 5)
    smoothed = (low + high) * np.float32(0.5)
    smoothed[edges | (low <= 0) | (high >= huge)] = np.nan
    return smoothed


def align_to_depth(views: Sequence[DepthView], model_points: Sequence[np.ndarray],
                   model_normals: Sequence[np.ndarray], camera: CameraModel, T_cam_base: np.ndarray,
                   schedule: Sequence[float] = DEFAULT_SCHEDULE, steps_per_stage: int = STEPS_PER_STAGE,
                   min_correspondences: int = 100, min_coverage: float = 0.3, estimate_scale: bool = False,
                   scale_prior_std: float = SCALE_PRIOR_STD) -> DepthAlignment:
    """Refine T(camera <- base) so the robot surface (per view: points and normals in the base frame, e.g. from
    RobotSurface.in_base at that frame's joints) lies on the measured depth of every view.

    All views share one camera pose (a static camera, or a single frame). Fails, keeping nothing, when too few
    points match or too little of the visible model is matched at the final radius.

    ``estimate_scale``: the depth is taken as (1 + s) times the truth and s is estimated with the pose, pulled
    towards 0 by a prior of std ``scale_prior_std`` that only matters where the depth barely constrains s (a robot
    seen over a small depth range, few matches).

    A depth offset (ToF: up to 11 mm) is not estimated. Over a robot at z = 1.5 +- 0.3 m it differs from a scale
    error of offset / 1.5 m by at most offset * 0.3 / 1.5 = 2 mm, below a ToF's noise (4-7 mm per pixel there) and
    multipath bias (up to 30 mm in creases), so the scale absorbs most of it. Tried as an eighth unknown (prior
    11 mm), on 3 simulated Azure Kinect units x 30 frames (offsets +7.0, -2.0, -8.3 mm) the 30-frame calibration
    went from 2.7 / 1.8 / 5.8 mm to 2.5 / 1.5 / 5.1 mm, on 3 D435 units (no offset) from 2.7 / 1.6 / 2.5 mm to
    3.0 / 1.3 / 2.9 mm, and the per-frame scale spread grew by up to 60 %: not reliably better.
    """
    if not (len(views) == len(model_points) == len(model_normals)) or not views:
        raise ValueError(f'need one model per depth view and at least one view; got {len(views)} views, '
                         f'{len(model_points)} point sets, {len(model_normals)} normal sets')
    if not schedule or any(not r > 0 for r in schedule):
        raise ValueError(f'schedule must list positive radii, got {tuple(schedule)}')
    if not scale_prior_std > 0:
        raise ValueError(f'scale_prior_std must be > 0, got {scale_prior_std}')
    T = np.array(T_cam_base, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return DepthAlignment(False, 'initial pose is not a finite 4x4 transform')
    scale = 1.0
    unknowns = 7 if estimate_scale else 6
    for radius in schedule:
        for _ in range(steps_per_stage):
            system, _ = _normal_equations(views, model_points, model_normals, camera, T, scale, radius)
            if system is None:
                break
            H, g = system
            if estimate_scale:
                # Prior s ~ N(0, scale_prior_std), in units of the stage's inlier residual (the Huber threshold).
                weight = (radius / 3.0 / scale_prior_std) ** 2
                H[6, 6] += weight
                g[6] += weight * (scale - 1.0)
            try:
                step = np.linalg.solve(H[:unknowns, :unknowns] + 1e-9 * np.eye(unknowns), -g[:unknowns])
            except np.linalg.LinAlgError:
                break
            update = np.eye(4)
            update[:3, :3] = Rotation.from_rotvec(step[:3]).as_matrix()
            update[:3, 3] = step[3:6]
            T = update @ T
            scale += step[6] if estimate_scale else 0.0
            if np.linalg.norm(step[:3]) < 1e-5 and np.linalg.norm(step[3:]) < 1e-5:
                break
    _, stats = _normal_equations(views, model_points, model_normals, camera, T, scale, schedule[-1])
    count, rms, coverage = stats
    if count < min_correspondences:
        return DepthAlignment(False, f'only {count} model points matched the depth (need {min_correspondences})',
                              correspondences=count, rms_m=rms, coverage=coverage, depth_scale=scale)
    if coverage < min_coverage:
        return DepthAlignment(False, f'only {coverage:.0%} of the visible robot surface matched the depth '
                                     f'(need {min_coverage:.0%})', correspondences=count, rms_m=rms,
                              coverage=coverage, depth_scale=scale)
    return DepthAlignment(True, f'{count} points, rms {rms * 1000:.1f} mm, coverage {coverage:.0%}, depth scale '
                                f'{scale:.4f}', T, count, rms, coverage, scale)


def scaled_pose(T_cam_base: np.ndarray, depth_scale: float) -> np.ndarray:
    """The affine map base -> measured camera-frame points, depth_scale * T: what depth_agreement must compare
    with a depth image that shows the robot scaled (it projects to the same pixels)."""
    S = np.array(T_cam_base, dtype=np.float64)
    S[:3] *= depth_scale
    return S


def depth_agreement(view: DepthView, points_base: np.ndarray, normals_base: np.ndarray, camera: CameraModel,
                    poses: np.ndarray, tolerance_m: float = 0.02, see_through_weight: float = 1.0) -> np.ndarray:
    """For each candidate T(camera <- base) (H, 4, 4): how many camera-facing model points land in the image on a
    measured depth within ``tolerance_m`` of their own, less ``see_through_weight`` times those where the camera
    sees farther than the point (it looks through where the pose puts the robot). A cheap vote that tells a right
    pose from a wrong one long before ICP could, so hypotheses from a few keypoints can be checked by the hundred."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    scores = np.zeros(len(poses))
    z_map = view.points[..., 2]
    for h, T in enumerate(poses):
        x, u, v = _facing_in_image(points_base, normals_base, T, camera)
        gap = z_map[v, u] - x[:, 2]
        scores[h] = (np.count_nonzero(np.abs(gap) < tolerance_m)
                     - see_through_weight * np.count_nonzero(gap > tolerance_m))
    return scores


def _facing_in_image(points_base, normals_base, T, camera):
    """Model points in the camera frame that face the camera and project into the image, with their pixel
    columns and rows."""
    x = points_base @ T[:3, :3].T + T[:3, 3]
    facing = np.sum((normals_base @ T[:3, :3].T) * x, axis=1) < 0
    u, v, inside = camera.pixel_indices(camera.project(x))
    inside &= facing
    return x[inside], u[inside], v[inside]


def _normal_equations(views, model_points, model_normals, camera, T, scale, radius):
    """Gauss-Newton system (H, g) for a left-multiplied pose update and a scale step (unknowns: rotation, translation,
    scale), and (matches, rms, coverage). The predicted measured point of model point x (camera frame) is scale * x.
    """
    H, g = np.zeros((7, 7)), np.zeros(7)
    matched = visible = 0
    squares = 0.0
    for view, points_base, normals_base in zip(views, model_points, model_normals):
        x, u, v = _facing_in_image(points_base, normals_base, T, camera)
        y = scale * x
        # Hidden behind something nearer that the camera measured, or on a hole: no match to look for, and not
        # counted as visible (NaN fails the comparison).
        seen = view.points[v, u, 2] >= y[:, 2] - radius
        y = y[seen]
        visible += len(y)
        if len(y) == 0:
            continue
        distance, index = view.tree.query(y, distance_upper_bound=radius)
        ok = np.isfinite(distance)
        if not ok.any():
            continue
        y, o, n = y[ok], view.cloud[index[ok]], view.cloud_normals[index[ok]]
        r = np.sum(n * (y - o), axis=1)
        # Huber weights at a third of the radius.
        k = radius / 3.0
        w = np.where(np.abs(r) <= k, 1.0, k / np.maximum(np.abs(r), 1e-12))
        J = np.hstack([np.cross(y, n), scale * n, np.sum(n * y, axis=1, keepdims=True) / scale])
        H += (J * w[:, None]).T @ J
        g += (J * w[:, None]).T @ r
        matched += len(r)
        squares += float(np.sum(r ** 2))
    stats = (matched, float(np.sqrt(squares / matched)) if matched else float('nan'),
             matched / visible if visible else 0.0)
    return ((H, g) if matched >= 7 else None), stats


_RAYS: dict[tuple, np.ndarray] = {}


def _rays(camera: CameraModel) -> np.ndarray:
    """(H, W, 3) rays (x/z, y/z, 1) of every pixel, cached per intrinsics since undistorting a full grid is slow."""
    key = (camera.width, camera.height, camera.K.tobytes(), camera.D.tobytes(), camera.distortion_model)
    rays = _RAYS.get(key)
    if rays is None:
        u, v = np.meshgrid(np.arange(camera.width, dtype=float), np.arange(camera.height, dtype=float))
        xy = camera.normalize(np.column_stack([u.ravel(), v.ravel()])).reshape(camera.height, camera.width, 2)
        rays = np.concatenate([xy, np.ones((camera.height, camera.width, 1))], axis=-1)
        rays.flags.writeable = False
        if len(_RAYS) >= 8:
            _RAYS.pop(next(iter(_RAYS)))
        _RAYS[key] = rays
    return rays


def keypoints_from_depth(view: DepthView, pixels: np.ndarray, window_px: int = 2,
                         behind_surface_m: float = 0.03) -> np.ndarray:
    """Rough camera-frame 3D keypoints (NaN where unknown): the median measured depth around each detected pixel,
    pushed ``behind_surface_m`` along the ray because link origins lie inside the links, not on their skin.

    Good to a few centimetres, which is all an initial 3D-3D fit before align_to_depth needs.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    height, width = view.points.shape[:2]
    out = np.full((len(pixels), 3), np.nan)
    for k, (u, v) in enumerate(pixels):
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        col, row = int(round(u)), int(round(v))
        if not (0 <= col < width and 0 <= row < height):
            continue
        patch = view.points[max(0, row - window_px):row + window_px + 1, max(0, col - window_px):col + window_px + 1]
        patch = patch.reshape(-1, 3)
        patch = patch[np.isfinite(patch[:, 2])]
        if len(patch) == 0:
            continue
        surface = patch[np.argsort(patch[:, 2])[len(patch) // 2]]
        out[k] = surface * (1.0 + behind_surface_m / np.linalg.norm(surface))
    return out
