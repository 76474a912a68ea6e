"""Synthetic 2D-3D robot keypoint pairs for the lifter: forward kinematics of random joint vectors seen by random
cameras, with the errors a real keypoint detector makes.

RoboKeyGen trains its lifter on a rendered data set; the lifter itself only ever sees keypoints, so drawing them
straight from forward kinematics gives unlimited, exactly labelled pairs at a few milliseconds per batch. What the
renderer would add is modelled explicitly: pixel noise, keypoints the detector misses (low confidence), keypoints
outside the image, and gross outliers the detector is confident about.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.robot.kinematics import RobotKinematics

# Image sizes (width, height) of common RGB(-D) camera streams.
IMAGE_SIZES = ((640, 480), (848, 480), (1280, 720), (640, 576), (1920, 1080), (512, 512))


@dataclass(frozen=True)
class PairConfig:
    """Ranges the generator draws from. Camera placement follows the sim camera's spherical parametrisation
    (kp_pose_ros.sim.scene), widened so the lifter also covers viewpoints the simulator does not use."""

    hfov_range_deg: tuple[float, float] = (55.0, 95.0)
    image_sizes: tuple[tuple[int, int], ...] = IMAGE_SIZES
    # Principal point offset from the image centre, as a fraction of the image size.
    principal_point_jitter: float = 0.03
    distance_range_m: tuple[float, float] = (0.8, 2.5)
    elevation_range_deg: tuple[float, float] = (-10.0, 60.0)
    roll_jitter_deg: float = 10.0
    # The camera looks at the keypoints' centroid moved by up to this much along each axis.
    look_at_jitter_m: float = 0.25
    joint_margin_rad: float = 0.05
    # Arms with a keypoint other than the base below this height would be in the floor: rejected.
    floor_z_m: float = 0.0
    min_depth_m: float = 0.1
    # Detector errors: Gaussian pixel noise with a standard deviation drawn per sample from this range, keypoints
    # dropped (reported missing) with dropout_prob, valid keypoints moved to a random pixel with outlier_prob.
    # (A regressor trained with 5 % outliers was 1 cm worse on exact 2D than one trained with 2 %, and no better on
    # input with 5 % outliers.)
    pixel_noise_range_px: tuple[float, float] = (0.0, 4.0)
    dropout_prob: float = 0.1
    outlier_prob: float = 0.02
    min_valid: int = 4

    def as_dict(self) -> dict:
        """Plain values for a manifest."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, eq=False)
class PairBatch:
    """B samples of N keypoints and J joints. Missing keypoints have mask 0, nccs 0 and NaN pixels; X_cam always
    holds every keypoint (the lifter is trained to fill in the missing ones)."""

    nccs: np.ndarray        # (B, N, 2) (x/z, y/z) of the detected pixels
    mask: np.ndarray        # (B, N) 1.0 where the detector reports the keypoint
    pixels: np.ndarray      # (B, N, 2) detected pixels (NaN where missing)
    X_cam: np.ndarray       # (B, N, 3) true keypoints in the camera optical frame (m)
    q: np.ndarray           # (B, J)
    T_cam_base: np.ndarray  # (B, 4, 4)
    K: np.ndarray           # (B, 3, 3)
    image_size: np.ndarray  # (B, 2) width, height

    def __len__(self) -> int:
        return len(self.q)


def _concat(batches: list[PairBatch], count: int) -> PairBatch:
    return PairBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches])[:count]
                        for f in fields(PairBatch)})


def look_at_batch(eye: np.ndarray, target: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(B, 4, 4) camera optical frames at ``eye`` looking at ``target``, image up towards world +z, rolled by ``roll``
    (rad): kp_pose_ros.sim.scene.look_at for a batch (eyes are never straight above or below their targets here)."""
    z = target - eye
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    x, y = c * x + s * y, -s * x + c * y
    T = np.tile(np.eye(4), (len(eye), 1, 1))
    T[:, :3, :3] = np.stack([x, y, z], axis=2)
    T[:, :3, 3] = eye
    return T


class RobotPairGenerator:
    """Seeded, on-the-fly batches of (corrupted 2D keypoints, 3D keypoints, joints, camera) for one robot."""

    def __init__(self, kinematics: RobotKinematics, config: PairConfig | None = None, seed: int = 0) -> None:
        self.kinematics = kinematics
        self.config = config or PairConfig()
        self.rng = np.random.default_rng(seed)
        if max(self.config.elevation_range_deg) >= 89.0 or min(self.config.elevation_range_deg) <= -89.0:
            raise ValueError('elevation_range_deg must stay within (-89, 89) degrees')

    def sample(self, batch_size: int, camera: CameraModel | None = None, corrupt: bool = True) -> PairBatch:
        """One batch of independent samples; a fixed ``camera`` replaces the random intrinsics."""
        return self.sample_sequences(batch_size, 1, camera=camera, corrupt=corrupt)[0]

    def sample_sequences(self, batch_size: int, frames: int, joint_step_rad: float = 0.03,
                         camera: CameraModel | None = None, corrupt: bool = True) -> list[PairBatch]:
        """``frames`` consecutive frames of B sequences: a static camera watching the arm move by a Gaussian step
        of ``joint_step_rad`` per joint per frame. Sequences where any frame fails the checks are redrawn."""
        if batch_size < 1 or frames < 1:
            raise ValueError(f'need batch_size >= 1 and frames >= 1, got {batch_size} and {frames}')
        parts: list[list[PairBatch]] = []
        have = 0
        while have < batch_size:
            drawn = self._draw(max(64, int(1.5 * (batch_size - have))), frames, joint_step_rad, camera, corrupt)
            parts.append(drawn)
            have += len(drawn[0])
        return [_concat([p[f] for p in parts], batch_size) for f in range(frames)]

    def _draw(self, n: int, frames: int, joint_step_rad: float, camera: CameraModel | None,
              corrupt: bool) -> list[PairBatch]:
        cfg, rng, kin = self.config, self.rng, self.kinematics
        low, high = kin.lower + cfg.joint_margin_rad, kin.upper - cfg.joint_margin_rad
        qs = [kin.sample_joints(rng, n, cfg.joint_margin_rad)]
        for _ in range(frames - 1):
            qs.append(np.clip(qs[-1] + rng.normal(0.0, joint_step_rad, qs[-1].shape), low, high))
        X_base = [kin.keypoints(q) for q in qs]
        ok = np.all([X[:, 1:, 2].min(axis=1) >= cfg.floor_z_m for X in X_base], axis=0)

        K, size = self._intrinsics(n, camera)
        T_base_cam = self._camera_poses(X_base[0])
        R, eye = T_base_cam[:, :3, :3], T_base_cam[:, :3, 3]
        T_cam_base = np.tile(np.eye(4), (n, 1, 1))
        T_cam_base[:, :3, :3] = R.transpose(0, 2, 1)
        T_cam_base[:, :3, 3] = -np.einsum('bji,bj->bi', R, eye)
        sigma = rng.uniform(*cfg.pixel_noise_range_px, size=(n, 1, 1)) if corrupt else np.zeros((n, 1, 1))

        out = []
        f, c = np.stack([K[:, 0, 0], K[:, 1, 1]], axis=1)[:, None], K[:, None, :2, 2]
        for q, X in zip(qs, X_base):
            X_cam = np.einsum('bij,bnj->bni', T_cam_base[:, :3, :3], X) + T_cam_base[:, None, :3, 3]
            depth = X_cam[..., 2]
            ok &= depth.min(axis=1) > cfg.min_depth_m
            uv = X_cam[..., :2] / np.maximum(depth, cfg.min_depth_m)[..., None]
            px = uv * f + c + sigma * rng.standard_normal(uv.shape)
            inside = np.all((px > -0.5) & (px < size[:, None] - 0.5), axis=2)
            mask = inside.copy()
            if corrupt:
                mask &= rng.random(mask.shape) >= cfg.dropout_prob
                outlier = mask & (rng.random(mask.shape) < cfg.outlier_prob)
                random_px = rng.uniform(0.0, 1.0, px.shape) * size[:, None] - 0.5
                px = np.where(outlier[..., None], random_px, px)
            ok &= mask.sum(axis=1) >= cfg.min_valid
            nccs = np.where(mask[..., None], (px - c) / f, 0.0)
            out.append(dict(nccs=nccs, mask=mask.astype(np.float64), pixels=np.where(mask[..., None], px, np.nan),
                            X_cam=X_cam, q=q, T_cam_base=T_cam_base, K=K, image_size=size.astype(np.int64)))
        keep = np.flatnonzero(ok)
        return [PairBatch(**{k: v[keep] for k, v in frame.items()}) for frame in out]

    def _intrinsics(self, n: int, camera: CameraModel | None) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3, 3) pinhole K with square pixels and (n, 2) image sizes."""
        cfg, rng = self.config, self.rng
        if camera is not None:
            if camera.has_distortion:
                raise ValueError('the generator draws ideal pinhole pixels: pass a camera without distortion')
            return np.tile(camera.K, (n, 1, 1)), np.tile([float(camera.width), float(camera.height)], (n, 1))
        size = np.asarray(cfg.image_sizes, dtype=np.float64)[rng.integers(len(cfg.image_sizes), size=n)]
        hfov = np.radians(rng.uniform(*cfg.hfov_range_deg, size=n))
        focal = size[:, 0] / 2.0 / np.tan(hfov / 2.0)
        centre = (size - 1.0) / 2.0 + rng.uniform(-1.0, 1.0, (n, 2)) * cfg.principal_point_jitter * size
        K = np.zeros((n, 3, 3))
        K[:, 0, 0] = K[:, 1, 1] = focal
        K[:, :2, 2] = centre
        K[:, 2, 2] = 1.0
        return K, size

    def _camera_poses(self, X_base: np.ndarray) -> np.ndarray:
        """(n, 4, 4) base <- camera: spherical coordinates around the jittered centroid of each arm."""
        cfg, rng = self.config, self.rng
        n = len(X_base)
        target = X_base.mean(axis=1) + rng.uniform(-cfg.look_at_jitter_m, cfg.look_at_jitter_m, (n, 3))
        distance = rng.uniform(*cfg.distance_range_m, size=n)
        azimuth = rng.uniform(-np.pi, np.pi, size=n)
        elevation = np.radians(rng.uniform(*cfg.elevation_range_deg, size=n))
        direction = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                              np.sin(elevation)], axis=1)
        roll = np.radians(rng.uniform(-cfg.roll_jitter_deg, cfg.roll_jitter_deg, size=n))
        return look_at_batch(target + distance[:, None] * direction, target, roll)
