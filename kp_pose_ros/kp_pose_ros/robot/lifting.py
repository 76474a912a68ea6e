"""2D robot keypoints -> 3D keypoints in the camera frame -> joint angles, with the committed ONNX models.

RoboKeyGen (Tian et al., §III) lifts keypoints given in the Normalised Camera Coordinate Space (x/z, y/z; see
CameraModel.normalize) by sampling a score-based diffusion model K times and averaging, then regresses joint angles
from the 3D skeleton. Keypoints the detector misses are masked out of the condition and filled in by the model, so a
frame with a few missing keypoints still lifts. Each model's manifest (YAML beside it) says how its inputs are laid
out and standardised; these classes read it so the code never hard-codes a model's constants.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from kp_pose_ros.core.onnx_model import ModelLoadError, OnnxModel, OnnxWrapper, load_manifest, manifest_value
from kp_pose_ros.robot.diffusion import VPSDE, ddim_sample

MIN_VALID_KEYPOINTS = 3
CONDITION_SPACES = ('nccs', 'pixels')


@dataclass(frozen=True, eq=False)
class LiftResult:
    """``points`` (N, 3) in the camera optical frame (m), the mean of the candidates; ``spread`` (N,) the RMS
    distance of the candidates from it (m; 0 for a deterministic lifter); ``observed`` (N,) the keypoints that
    conditioned the lift (the others were filled in by the model)."""

    points: np.ndarray
    spread: np.ndarray
    observed: np.ndarray


def _manifest_vector(manifest: dict, path: str, model_path: Path, length: int) -> np.ndarray:
    try:
        vector = np.asarray(manifest_value(manifest, path, model_path), dtype=np.float64)
    except (TypeError, ValueError):
        vector = np.zeros(0)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise ModelLoadError(f'model manifest of {Path(model_path).name}: "{path}" must hold {length} finite numbers')
    return vector


class _KeypointLifter(OnnxWrapper):
    """Manifest, session and condition building shared by the diffusion and regression lifters."""

    def __init__(self, model_path: str | Path, providers: str, threads: int, trt_cache_dir: str | Path = '',
                 trt_fp16: bool = False) -> None:
        self.model_path = Path(model_path)
        manifest = load_manifest(self.model_path)
        self.keypoint_links: tuple[str, ...] = tuple(manifest_value(manifest, 'robot.keypoint_links', model_path))
        n = len(self.keypoint_links)
        if n < MIN_VALID_KEYPOINTS:
            raise ModelLoadError(f'model manifest of {self.model_path.name} names {n} keypoints; need at least 3')
        self.mean = _manifest_vector(manifest, 'standardization.mean', model_path, 3 * n)
        self.scale = _manifest_vector(manifest, 'standardization.scale', model_path, 3 * n)
        if np.any(self.scale <= 0):
            raise ModelLoadError(f'model manifest of {self.model_path.name}: standardization.scale must be > 0')
        self.condition_space = manifest_value(manifest, 'condition.space', model_path)
        if self.condition_space not in CONDITION_SPACES:
            raise ModelLoadError(f'model manifest of {self.model_path.name}: unknown condition.space '
                                 f'{self.condition_space!r}, expected one of {CONDITION_SPACES}')
        self._pixel_scale = (float(manifest_value(manifest, 'condition.pixel_scale', model_path))
                             if self.condition_space == 'pixels' else 1.0)
        self.manifest = manifest
        self.model = OnnxModel(self.model_path, providers, threads, trt_cache_dir=trt_cache_dir, trt_fp16=trt_fp16)
        for tensor in self.model.session.get_inputs() + self.model.session.get_outputs():
            if tensor.name != 't' and tensor.shape[-1] != 3 * n:
                raise ModelLoadError(f'{self.model_path.name}: {tensor.name} has shape {tensor.shape}, but the '
                                     f'manifest names {n} keypoints ({3 * n} values)')

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_links)

    def condition_of(self, pixels: ArrayLike, camera) -> np.ndarray:
        """Detected pixels (N, 2) in the space this model was trained on: as they are, or NCCS (camera.normalize).
        Feeding one model the other's space gives plausible-looking wrong skeletons, so callers always go through
        this."""
        return np.asarray(pixels, float) if self.condition_space == 'pixels' else camera.normalize(pixels)

    def _condition(self, keypoints_2d: ArrayLike, valid: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """[uv * mask, mask] (3N,) and the mask. NaN or infinite rows count as missing."""
        n = self.num_keypoints
        uv = np.asarray(keypoints_2d, dtype=np.float64)
        valid = np.asarray(valid)
        if uv.shape != (n, 2):
            raise ValueError(f'keypoints_2d must have shape ({n}, 2) for keypoints {", ".join(self.keypoint_links)}; '
                             f'got {uv.shape}')
        if valid.shape != (n,):
            raise ValueError(f'valid must have shape ({n},), got {valid.shape}')
        observed = valid.astype(bool) & np.isfinite(uv).all(axis=1)
        count = int(observed.sum())
        if count < MIN_VALID_KEYPOINTS:
            raise ValueError(f'only {count} of {n} keypoints are valid; lifting needs at least {MIN_VALID_KEYPOINTS}')
        uv = np.where(observed[:, None], uv / self._pixel_scale, 0.0)
        return np.concatenate([uv.reshape(-1), observed.astype(np.float64)]), observed

    def _to_metres(self, standardised: np.ndarray) -> np.ndarray:
        return (standardised * self.scale + self.mean).reshape(*standardised.shape[:-1], self.num_keypoints, 3)


class DiffusionLifter(_KeypointLifter):
    """K DDIM samples of the 3D keypoints given their 2D positions, averaged (RoboKeyGen §III-B).

    ``steps`` single-frame steps start from Gaussian noise at t = 1; with a previous estimate (online mode) the
    candidates start from it diffused to ``online_t_start`` and take ``online_steps`` steps. Defaults come from the
    manifest's ``sampler`` section. Noise is drawn from one generator seeded with ``seed``: the same sequence of
    calls gives the same results.
    """

    def __init__(self, model_path: str | Path, providers: str = 'auto', num_candidates: int | None = None,
                 steps: int | None = None, online_t_start: float | None = None, online_steps: int | None = None,
                 seed: int = 0, threads: int = 1, trt_cache_dir: str | Path = '', trt_fp16: bool = False) -> None:
        super().__init__(model_path, providers, threads, trt_cache_dir, trt_fp16)
        sde = manifest_value(self.manifest, 'sde', model_path)
        sampler = manifest_value(self.manifest, 'sampler', model_path)
        try:
            self.sde = VPSDE(sde['beta_min'], sde['beta_max'], sde['T'], sde['eps'])
            self.num_candidates = int(num_candidates or sampler['num_candidates'])
            self.steps = int(steps or sampler['steps'])
            self.online_t_start = float(online_t_start or sampler['online_t_start'])
            self.online_steps = int(online_steps or sampler['online_steps'])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f'model manifest of {self.model_path.name}: bad "sde" or "sampler" section: '
                                 f'{exc!r}') from None
        if min(self.num_candidates, self.steps, self.online_steps) < 1:
            raise ValueError('num_candidates, steps and online_steps must be >= 1')
        if not self.sde.eps < self.online_t_start <= self.sde.T:
            raise ValueError(f'online_t_start must be in ({self.sde.eps}, {self.sde.T}], got {self.online_t_start}')
        self._rng = np.random.default_rng(seed)

    def _score(self, x: np.ndarray, t: np.ndarray, cond: np.ndarray) -> np.ndarray:
        return self.model.run({'x': x, 't': t, 'cond': cond})[0]

    def lift(self, keypoints_2d: ArrayLike, valid: ArrayLike, previous: ArrayLike | None = None) -> LiftResult:
        """3D keypoints from 2D ones: (N, 2) in the model's ``condition_space`` (NCCS for the shipped lifter),
        ``valid`` (N,) bools; missing rows may hold anything, NaN included. ``previous`` (N, 3), the last frame's
        estimate in metres, switches to online mode. Raises ValueError when fewer than 3 keypoints are valid."""
        cond, observed = self._condition(keypoints_2d, valid)
        if previous is None:
            candidates = ddim_sample(self._score, cond, self.num_candidates, self.steps, self._rng, sde=self.sde)
        else:
            previous = np.asarray(previous, dtype=np.float64)
            if previous.shape != (self.num_keypoints, 3) or not np.all(np.isfinite(previous)):
                raise ValueError(f'previous must be a finite ({self.num_keypoints}, 3) array of 3D keypoints, '
                                 f'got shape {previous.shape}')
            x_init = (previous.reshape(-1) - self.mean) / self.scale
            candidates = ddim_sample(self._score, cond, self.num_candidates, self.online_steps, self._rng,
                                     x_init=x_init, t_start=self.online_t_start, sde=self.sde)
        points = self._to_metres(candidates)
        mean = points.mean(axis=0)
        spread = np.sqrt(np.mean(np.sum((points - mean) ** 2, axis=2), axis=0))
        return LiftResult(mean, spread, observed)


class RegressionLifter(_KeypointLifter):
    """Direct regression 2D -> 3D (Martinez et al. 2017), the baseline of RoboKeyGen's Table III."""

    def __init__(self, model_path: str | Path, providers: str = 'auto', threads: int = 1,
                 trt_cache_dir: str | Path = '', trt_fp16: bool = False) -> None:
        super().__init__(model_path, providers, threads, trt_cache_dir, trt_fp16)

    def lift(self, keypoints_2d: ArrayLike, valid: ArrayLike, previous: ArrayLike | None = None) -> LiftResult:
        """Same contract as DiffusionLifter.lift; ``previous`` is accepted for interchangeability and unused."""
        cond, observed = self._condition(keypoints_2d, valid)
        points = self._to_metres(self.model.run({'cond': cond[None]})[0][0])
        return LiftResult(points, np.zeros(self.num_keypoints), observed)


def load_lifter(model_path: str | Path, providers: str = 'auto', threads: int = 1, trt_cache_dir: str | Path = '',
                trt_fp16: bool = False, **diffusion_options) -> _KeypointLifter:
    """The lifter a model file holds: a diffusion score model (its manifest has an ``sde`` section; takes
    ``diffusion_options`` such as num_candidates, steps, seed) or a direct regressor."""
    session = {'providers': providers, 'threads': threads, 'trt_cache_dir': trt_cache_dir, 'trt_fp16': trt_fp16}
    if 'sde' in load_manifest(Path(model_path)):
        return DiffusionLifter(model_path, **session, **diffusion_options)
    return RegressionLifter(model_path, **session)


class JointRegressor(OnnxWrapper):
    """Joint angles from 3D keypoints (RoboKeyGen §III-C). The network sees only rigid-motion invariant features
    of the skeleton, so the camera pose does not matter. What keypoints cannot reveal comes out by convention: for
    the Panda, panda_joint1 (indistinguishable from the base's yaw) and panda_joint7 (turns the hand about the axis
    through its keypoint) near their prior mean, and of the two shoulder configurations (q1, q2, q3) and
    (q1 + pi, -q2, q3 + pi), which place every keypoint identically, the one with q2 <= 0. The forward kinematics of
    the result match the keypoints up to a rigid motion, which pose fitting then finds. The manifest lists the
    per-joint errors."""

    def __init__(self, model_path: str | Path, providers: str = 'auto', threads: int = 1,
                 trt_cache_dir: str | Path = '', trt_fp16: bool = False) -> None:
        self.model_path = Path(model_path)
        manifest = load_manifest(self.model_path)
        self.keypoint_links: tuple[str, ...] = tuple(manifest_value(manifest, 'robot.keypoint_links', model_path))
        self.joint_names: tuple[str, ...] = tuple(manifest_value(manifest, 'robot.joint_names', model_path))
        j = len(self.joint_names)
        self.lower = _manifest_vector(manifest, 'robot.lower', model_path, j)
        self.upper = _manifest_vector(manifest, 'robot.upper', model_path, j)
        self.manifest = manifest
        self.model = OnnxModel(self.model_path, providers, threads, trt_cache_dir=trt_cache_dir, trt_fp16=trt_fp16)
        out = self.model.session.get_outputs()[0].shape[-1]
        if out != 2 * j:
            raise ModelLoadError(f'{self.model_path.name}: output has {out} values, the manifest names {j} joints '
                                 f'(sin and cos each)')

    def predict(self, points_cam: ArrayLike) -> np.ndarray:
        """(J,) joint angles (rad) within the joint limits, from the (N, 3) keypoints in any frame."""
        n = len(self.keypoint_links)
        points = np.asarray(points_cam, dtype=np.float64)
        if points.shape != (n, 3) or not np.all(np.isfinite(points)):
            raise ValueError(f'points_cam must be a finite ({n}, 3) array for keypoints '
                             f'{", ".join(self.keypoint_links)}; got shape {points.shape}')
        sin_cos = self.model.run({'points': points.reshape(1, -1)})[0][0].reshape(-1, 2)
        angles = np.arctan2(sin_cos[:, 0], sin_cos[:, 1])
        # The turn of the angle nearest the middle of each joint's range (the Panda's joint 6 goes beyond pi).
        centre = (self.lower + self.upper) / 2.0
        angles = centre + np.angle(np.exp(1j * (angles - centre)))
        return np.clip(angles, self.lower, self.upper)
