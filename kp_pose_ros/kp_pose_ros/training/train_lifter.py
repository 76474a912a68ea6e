"""Train, export and evaluate the robot keypoint lifters and the joint-angle regressor (RoboKeyGen §III-B/C).

    python -m kp_pose_ros.training.train_lifter --out kp_pose_ros/models --seed 0

writes four ONNX models, each with a YAML manifest holding its constants, training record and accuracy measured on
held-out synthetic data through the runtime classes in kp_pose_ros.robot.lifting (i.e. exactly what ships):
- robot_lifter_panda             score network of the diffusion lifter, conditioned on NCCS keypoints
- robot_lifter_regression_panda  its regression branch alone: direct 2D -> 3D regression (Table III baseline)
- robot_lifter_nonccs_panda      the same network conditioned on raw pixels, trained at one camera (Table IV ablation)
- robot_joints_panda             3D keypoints -> joint angles
Training data is drawn on the fly from forward kinematics (training.robot_pairs). The paper trains for far longer on
a GPU; these models train in minutes to half an hour each on a CPU (see each manifest's training section).
--only retrains one model, --evaluate-only re-measures the committed ones.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.metrics import add_auc
from kp_pose_ros.core.rigid_fit import umeyama
from kp_pose_ros.robot.diffusion import VPSDE
from kp_pose_ros.robot.kinematics import PANDA_BASE_LINK, PANDA_KEYPOINT_LINKS, RobotKinematics
from kp_pose_ros.robot.lifting import DiffusionLifter, JointRegressor, RegressionLifter
from kp_pose_ros.robot.urdf import load_urdf
from kp_pose_ros.sim.camera_presets import PAPER_EVAL_CAMERAS
from kp_pose_ros.training.robot_pairs import PairBatch, RobotPairGenerator

PANDA_URDF = 'franka_panda/panda.urdf'
# The three simulated cameras of RoboKeyGen's cross-camera study (Table II): name -> (width, height, HFOV deg).
# The no-NCCS ablation sees a single camera in training, like a model trained on one sensor's images.
NONCCS_TRAIN_CAMERA = 'realsense_70.21'
# Raw pixels are divided by this to keep the network's inputs near unit range.
PIXEL_SCALE = 1000.0
# Keypoint coordinates in the condition are multiplied by this inside the networks: NCCS spread ~0.3 -> ~1.
UV_SCALE = 3.0
AUC_THRESHOLD_M = 0.1
EVAL_SEED_OFFSET = 1000
SDE = VPSDE(beta_min=0.1, beta_max=20.0, T=1.0, eps=1e-4)
SAMPLER = {'type': 'ddim', 'eta': 0.0, 'num_candidates': 10, 'steps': 20, 'online_t_start': 0.3, 'online_steps': 6}
ONNX_OPSET = 17


def panda_kinematics() -> RobotKinematics:
    import pybullet_data

    urdf = os.path.join(pybullet_data.getDataPath(), PANDA_URDF)
    return RobotKinematics(load_urdf(urdf), PANDA_BASE_LINK, PANDA_KEYPOINT_LINKS)


# ----------------------------------------------------------------------------------------------------- data
class Standardizer:
    """Fixed per-coordinate mean and scale of the camera-frame keypoints, so the diffused variable is ~N(0, I)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean, self.scale = mean, scale

    @classmethod
    def fit(cls, generator: RobotPairGenerator, samples: int = 65536) -> Standardizer:
        X = generator.sample(samples).X_cam.reshape(samples, -1)
        return cls(np.round(X.mean(axis=0), 4), np.round(X.std(axis=0), 4))

    def __call__(self, X_cam: np.ndarray) -> np.ndarray:
        return (X_cam.reshape(len(X_cam), -1) - self.mean) / self.scale


# ----------------------------------------------------------------------------------------------------- networks
class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block. With an embedding (time and condition), the normalised features are scaled and
    shifted by it (adaptive LayerNorm, as in DiT), which conditions every block strongly at little cost."""

    def __init__(self, hidden: int, embedding: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=not embedding)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.modulation = nn.Linear(embedding, 2 * hidden) if embedding else None
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm(h)
        if self.modulation is not None:
            scale, shift = self.modulation(emb).chunk(2, dim=1)
            y = y * (1.0 + scale) + shift
        return h + self.fc2(self.act(self.fc1(self.act(y))))


class ConditionFeatures(nn.Module):
    """[uv * mask, mask] (B, 3N) -> the same, uv rescaled to about unit spread, plus the log of every pairwise 2D
    distance between observed keypoints. Apparent bone lengths carry the depth (depth ~ length / apparent length),
    and in log form that relation is additive, which an MLP learns far sooner than a division."""

    def __init__(self, num_keypoints: int, uv_scale: float) -> None:
        super().__init__()
        self.n, self.uv_scale = num_keypoints, uv_scale
        pairs = list(itertools.combinations(range(num_keypoints), 2))
        self.register_buffer('pair_a', torch.tensor([p[0] for p in pairs]))
        self.register_buffer('pair_b', torch.tensor([p[1] for p in pairs]))
        self.size = 3 * num_keypoints + len(pairs)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        n = self.n
        uv = cond[:, :2 * n].reshape(-1, n, 2)
        mask = cond[:, 2 * n:]
        both = mask[:, self.pair_a] * mask[:, self.pair_b]
        distance = torch.sqrt(((uv[:, self.pair_a] - uv[:, self.pair_b]) ** 2).sum(-1) + 1e-8)
        # log(1e-3) ~ -7 for pairs with a missing keypoint would swamp the rest: those are 0 instead.
        return torch.cat([cond[:, :2 * n] * self.uv_scale, mask, torch.log(distance + 1e-3) * both],
                         dim=1)


class RegressionNet(nn.Module):
    """Linear in, residual blocks, linear out: the shape of Martinez et al.'s 2D -> 3D lifting baseline."""

    def __init__(self, inputs: int, outputs: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.inp = nn.Linear(inputs, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, outputs))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        h = self.inp(cond)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


class KeypointRegressor(nn.Module):
    """2D condition (B, 3N) -> standardised 3D keypoints (B, 3N): ConditionFeatures and a residual MLP (Martinez et
    al.'s design). With ``rays`` (NCCS input) it predicts per keypoint a log depth z and a small correction of the
    observed (x/z, y/z) (the whole value for a missing keypoint) and returns z (x/z, y/z, 1), so observed keypoints
    land on their viewing rays and only depth has to be learned; raw pixels are not rays, so without ``rays`` the
    MLP outputs the coordinates directly."""

    def __init__(self, num_keypoints: int, hidden: int, blocks: int, uv_scale: float, standardizer: Standardizer,
                 rays: bool) -> None:
        super().__init__()
        self.n, self.rays = num_keypoints, rays
        self.features = ConditionFeatures(num_keypoints, uv_scale)
        self.mlp = RegressionNet(self.features.size, 3 * num_keypoints, hidden, blocks)
        self.register_buffer('x_mean', torch.tensor(standardizer.mean, dtype=torch.float32))
        self.register_buffer('x_scale', torch.tensor(standardizer.scale, dtype=torch.float32))
        self.log_depth = float(np.log(standardizer.mean[2::3].mean()))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.features(cond))
        if not self.rays:
            return out
        n = self.n
        out = out.reshape(-1, n, 3)
        uv = cond[:, :2 * n].reshape(-1, n, 2)
        depth = torch.exp(self.log_depth + 0.3 * out[..., 2:])
        X = torch.cat([depth * (uv + 0.3 * out[..., :2]), depth], dim=2).reshape(-1, 3 * n)
        return (X - self.x_mean) / self.x_scale


class ScoreNet(nn.Module):
    """Score of the VP-perturbed keypoint distribution given the 2D keypoints.

    Two parts: a regression branch R(c) (KeypointRegressor) estimates the mean keypoints, and a GFPose-like residual
    MLP, modulated in every block by the time (Gaussian Fourier features) and the condition, models the
    distribution of the residual X - R(c) around it. x_t - mean_coef(t) R(c) is that residual diffused exactly like
    X, so the score of X at x_t is the residual's score there and the sampler need not know about R. The residual
    MLP predicts v = mean_coef(t) eps - std(t) (X - R) (Salimans & Ho), of unit scale at every t, where predicting
    eps would ask for ever finer precision as t -> 1; the graph converts it to the score the paper's sampler
    expects: eps = std r_t + mean_coef v, score = -eps / std.
    """

    def __init__(self, num_keypoints: int, hidden: int, blocks: int, regression: KeypointRegressor,
                 embedding: int = 128, fourier_scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        dim = 3 * num_keypoints
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer('fourier', torch.randn(embedding // 2, generator=gen) * fourier_scale)
        self.time = nn.Sequential(nn.Linear(embedding, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        self.regression = regression
        self.cond = nn.Sequential(nn.Linear(regression.features.size + dim, embedding), nn.SiLU(),
                                  nn.Linear(embedding, embedding))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, embedding) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def velocity(self, residual: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                 mean: torch.Tensor) -> torch.Tensor:
        angle = 2.0 * math.pi * t * self.fourier
        c = self.cond(torch.cat([self.regression.features(cond), mean], dim=1))
        emb = nn.functional.silu(self.time(torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)) + c)
        h = self.inp(residual)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        std = vp_std(t)
        mean_coef = torch.sqrt(1.0 - std * std)
        mean = self.regression(cond)
        residual = x - mean_coef * mean
        noise = std * residual + mean_coef * self.velocity(residual, t, cond, mean)
        return -noise / std


def vp_std(t: torch.Tensor) -> torch.Tensor:
    integral = SDE.beta_min * t + 0.5 * (SDE.beta_max - SDE.beta_min) * t * t / SDE.T
    # 1 - exp rather than expm1, which ONNX lacks; float32 keeps std(eps) within 1 %.
    return torch.sqrt(1.0 - torch.exp(-integral))


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Written out with index_select-style slicing: exports to plain ONNX ops.
    i, j = [1, 2, 0], [2, 0, 1]
    return a[..., i] * b[..., j] - a[..., j] * b[..., i]


class JointNet(nn.Module):
    """3D keypoints (B, 3N) in any frame -> (sin, cos) per joint (B, 2J).

    The MLP sees the pairwise distances of the keypoints and the triple products of their offsets from the base
    keypoint: invariant to rotation and translation (so to the camera pose), yet not to mirroring.
    """

    def __init__(self, num_keypoints: int, num_joints: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.n = num_keypoints
        pairs = list(itertools.combinations(range(num_keypoints), 2))
        triples = list(itertools.combinations(range(num_keypoints - 1), 3))
        self.register_buffer('pair_a', torch.tensor([p[0] for p in pairs]))
        self.register_buffer('pair_b', torch.tensor([p[1] for p in pairs]))
        self.register_buffer('tri', torch.tensor(triples).T.contiguous())
        features = len(pairs) + len(triples)
        self.register_buffer('feature_mean', torch.zeros(features))
        self.register_buffer('feature_scale', torch.ones(features))
        self.inp = nn.Linear(features, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, 2 * num_joints))

    def features(self, points: torch.Tensor) -> torch.Tensor:
        p = points.reshape(points.shape[0], self.n, 3)
        dist = torch.sqrt(((p[:, self.pair_a] - p[:, self.pair_b]) ** 2).sum(-1) + 1e-12)
        v = p[:, 1:] - p[:, :1]
        triple = (_cross(v[:, self.tri[0]], v[:, self.tri[1]]) * v[:, self.tri[2]]).sum(-1)
        return torch.cat([dist, triple], dim=1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        h = self.inp((self.features(points) - self.feature_mean) / self.feature_scale)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


def condition(batch: PairBatch, space: str) -> np.ndarray:
    """[uv * mask, mask] (B, 3N): the layout robot.lifting builds at run time."""
    uv = batch.nccs if space == 'nccs' else np.nan_to_num(batch.pixels) / PIXEL_SCALE
    uv = uv * batch.mask[..., None]
    return np.concatenate([uv.reshape(len(batch), -1), batch.mask], axis=1)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


# ----------------------------------------------------------------------------------------------------- training
def train(model: nn.Module, loss_fn, steps: int, lr: float, log_name: str, ema_decay: float = 0.999,
          warmup: int = 200) -> dict:
    """AdamW with warm-up and cosine decay, gradient clipping and an EMA of the weights (copied into the model
    at the end). ``loss_fn(model) -> loss`` draws its own batch."""
    regression = getattr(model, 'regression', None)
    groups = [list(model.parameters())]
    if regression is not None:
        # Clipped on their own, so the score term's larger gradients do not scale the regression branch's down.
        inner = {id(p) for p in regression.parameters()}
        groups = [list(regression.parameters()), [p for p in model.parameters() if id(p) not in inner]]
    optimiser = torch.optim.AdamW([{'params': g} for g in groups], lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    started, recent, log_every = time.time(), [], max(1, steps // 20)
    model.train()
    for step in range(steps):
        loss = loss_fn(model)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        for group in groups:
            nn.utils.clip_grad_norm_(group, 1.0)
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        recent.append(loss.item())
        recent = recent[-500:]
        if (step + 1) % log_every == 0:
            print(f'[{log_name}] step {step + 1}/{steps} loss {np.mean(recent[-log_every:]):.4f} '
                  f'({time.time() - started:.0f} s)', flush=True)
    model.load_state_dict(ema)
    model.eval()
    return {'steps': steps, 'final_loss_mean_last_500': round(float(np.mean(recent)), 5),
            'wall_time_s': round(time.time() - started, 1), 'optimiser': f'AdamW lr {lr} warm-up {warmup} steps, '
            f'cosine decay to 1%, grad-norm clip 1.0, EMA {ema_decay}'}


WEIGHTINGS = {
    # lambda(t) = beta(t) on the score error, the paper's (likelihood weighting, Song et al. 2021): in v terms
    # beta mean_coef^2 / std^2, which puts most of the weight on small t.
    'beta': lambda t, std, mean_coef: (SDE.beta_min + t * (SDE.beta_max - SDE.beta_min)) * mean_coef ** 2 / std ** 2,
    # lambda(t) = std^2 / mean_coef^2: every t weighs the same in v terms.
    'v': lambda t, std, mean_coef: torch.ones_like(t),
}


def diffusion_loss(generator: RobotPairGenerator, standardizer: Standardizer, space: str, batch_size: int,
                   weighting: str, camera: CameraModel | None = None):
    """Denoising score matching (paper Eq. 3), t ~ U(eps, 1), for the residual around the regression branch, plus
    the regression branch's own squared error. With r_0 = x_0 - R(c) and r_t = mean_coef r_0 + std z,
    |score - grad log p_0t|^2 = mean_coef^2 / std^2 |v_hat - v|^2, so the loss is written in v and weighted as
    WEIGHTINGS says. R(c) is held fixed in the score term, so only its own loss shapes it."""
    weight = WEIGHTINGS[weighting]

    def loss_fn(model: ScoreNet) -> torch.Tensor:
        batch = generator.sample(batch_size, camera=camera)
        x0 = _tensor(standardizer(batch.X_cam))
        cond = _tensor(condition(batch, space))
        t = torch.rand(batch_size, 1) * (SDE.T - SDE.eps) + SDE.eps
        std = vp_std(t)
        mean_coef = torch.sqrt(1.0 - std ** 2)
        z = torch.randn_like(x0)
        mean = model.regression(cond)
        r0 = x0 - mean.detach()
        v = model.velocity(mean_coef * r0 + std * z, t, cond, mean.detach())
        score_term = weight(t, std, mean_coef) * ((v - (mean_coef * z - std * r0)) ** 2).sum(1, keepdim=True)
        return score_term.mean() + ((mean - x0) ** 2).sum(1).mean()
    return loss_fn


def perturb_skeleton(X: np.ndarray, rng: np.random.Generator, noise_m: float = 0.04,
                     scale_jitter: float = 0.08) -> np.ndarray:
    """Keypoints as a lifter returns them: per-keypoint noise up to ``noise_m`` and a global scale error (depth)."""
    sigma = rng.uniform(0.0, noise_m, (len(X), 1, 1))
    scale = 1.0 + rng.uniform(-scale_jitter, scale_jitter, (len(X), 1, 1))
    return X * scale + sigma * rng.standard_normal(X.shape)


def canonical_shoulder(q: np.ndarray) -> np.ndarray:
    """The Panda's joints with the shoulder symmetry resolved: Rz(q1 + pi) Ry(-q2) Rz(q3 + pi) = Rz(q1) Ry(q2) Rz(q3)
    and the link2 -> link3 offset lies on joint 3's axis, so (q1 + pi, -q2, q3 + pi) puts every keypoint in the
    same place. No keypoint can tell the two apart; the regressor is taught the one with q2 <= 0 (the side of
    Franka's ready pose)."""
    q = q.copy()
    flip = q[:, 1] > 0
    q[flip, 0] += np.pi
    q[flip, 1] *= -1.0
    q[flip, 2] += np.pi
    q[:, [0, 2]] = np.angle(np.exp(1j * q[:, [0, 2]]))
    return q


def joint_loss(generator: RobotPairGenerator, batch_size: int, rng: np.random.Generator):
    def loss_fn(model: JointNet) -> torch.Tensor:
        batch = generator.sample(batch_size, corrupt=False)
        points = _tensor(perturb_skeleton(batch.X_cam, rng).reshape(batch_size, -1))
        q = canonical_shoulder(batch.q)
        target = _tensor(np.stack([np.sin(q), np.cos(q)], axis=2).reshape(batch_size, -1))
        return ((model(points) - target) ** 2).sum(1).mean()
    return loss_fn


# ----------------------------------------------------------------------------------------------------- export
def export_onnx(model: nn.Module, inputs: dict[str, torch.Tensor], output: str, path: Path) -> None:
    """ONNX with a dynamic batch axis, checked against torch on the example inputs."""
    import onnxruntime as ort

    model.eval()
    names = list(inputs)
    axes = {name: {0: 'batch'} for name in names + [output]}
    with torch.no_grad():
        torch.onnx.export(model, tuple(inputs.values()), str(path), input_names=names, output_names=[output],
                          dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
        expected = model(*inputs.values()).numpy()
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max()):
        raise RuntimeError(f'{path.name}: ONNX output differs from torch by {np.abs(got - expected).max()}')


def write_manifest(path: Path, manifest: dict) -> None:
    with open(path.with_suffix('.yaml'), 'w', encoding='utf-8') as f:
        f.write('# Written by `python -m kp_pose_ros.training.train_lifter`; see that module.\n')
        yaml.safe_dump(manifest, f, sort_keys=False, width=120)


# ----------------------------------------------------------------------------------------------------- metrics
def add_per_frame(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """ADD of each frame: mean distance between predicted and true keypoints (m)."""
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1)


def add_summary(add: np.ndarray) -> dict:
    """Mean, median and AUC of the ADD-threshold curve up to 0.1 m (x100), as DREAM and RoboKeyGen report it."""
    auc = add_auc(add, AUC_THRESHOLD_M)
    return {'auc_0.1m': round(float(auc), 2), 'median_m': round(float(np.median(add)), 4),
            'mean_m': round(float(np.mean(add)), 4)}


def eval_sets(kinematics: RobotKinematics, seed: int, sequences: int) -> dict[str, dict[str, list[PairBatch]]]:
    """Per camera, exact and corrupted 3-frame sequences (drawn independently), from held-out seeds."""
    sets = {}
    for index, (name, (w, h, fov)) in enumerate(PAPER_EVAL_CAMERAS.items()):
        camera = CameraModel.from_fov(w, h, fov)
        sets[name] = {
            corruption: RobotPairGenerator(kinematics, seed=seed + EVAL_SEED_OFFSET + index).sample_sequences(
                sequences, 3, camera=camera, corrupt=corruption == 'corrupted')
            for corruption in ('gt_2d', 'corrupted')}
    return sets


def _keypoints_2d(frame: PairBatch, i: int, space: str) -> np.ndarray:
    return frame.nccs[i] if space == 'nccs' else frame.pixels[i]


def evaluate_lifter(lifter, sets: dict, online: bool) -> dict:
    """ADD of frames 1 and 2 of every sequence lifted one by one; online: frame 0 from noise, then each frame
    initialised from the previous frame's estimate."""
    space = lifter.condition_space
    results = {}
    for camera, by_corruption in sets.items():
        results[camera] = {}
        for corruption, frames in by_corruption.items():
            single, sequential = [], []
            for i in range(len(frames[0])):
                previous = None
                for f, frame in enumerate(frames):
                    args = (_keypoints_2d(frame, i, space), frame.mask[i] > 0)
                    if f > 0:
                        single.append(add_per_frame(lifter.lift(*args).points, frame.X_cam[i]))
                    if online:
                        previous = lifter.lift(*args, previous=previous).points
                        if f > 0:
                            sequential.append(add_per_frame(previous, frame.X_cam[i]))
            entry = {'single_frame': add_summary(np.array(single))}
            if online:
                entry['online'] = add_summary(np.array(sequential))
            results[camera][corruption] = entry
    return results


def evaluate_joints(regressor: JointRegressor, lifter: DiffusionLifter, kinematics: RobotKinematics,
                    sets: dict) -> dict:
    """Per-joint mean absolute error (deg, against the true joints with the shoulder symmetry resolved the same
    way) and the keypoint error of the forward kinematics of the estimate after the best rigid alignment to the
    true keypoints (m): what pose fitting can at best achieve with these joints. From the true 3D keypoints and
    from lifted ones."""
    exact, corrupted = sets[NONCCS_TRAIN_CAMERA]['gt_2d'][0], sets[NONCCS_TRAIN_CAMERA]['corrupted'][0]

    def lifted(frame: PairBatch) -> np.ndarray:
        return np.array([lifter.lift(frame.nccs[i], frame.mask[i] > 0).points for i in range(len(frame))])

    sources = {'true_3d': (exact.X_cam, exact), 'lifted_gt_2d': (lifted(exact), exact),
               'lifted_corrupted_2d': (lifted(corrupted), corrupted)}
    results = {}
    for name, (points, frame) in sources.items():
        q = np.array([regressor.predict(p) for p in points])
        error = np.degrees(np.abs(np.angle(np.exp(1j * (q - canonical_shoulder(frame.q))))))
        fk = kinematics.keypoints(q)
        aligned = []
        for model_points, true_points in zip(fk, frame.X_cam):
            R, t = umeyama(model_points, true_points)
            aligned.append(add_per_frame(model_points @ R.T + t, true_points))
        results[name] = {'joint_error_deg': {joint: round(float(e), 2)
                                             for joint, e in zip(regressor.joint_names, error.mean(axis=0))},
                         'aligned_fk_keypoint_error_m': add_summary(np.array(aligned))}
    return results


def lift_latency(lifter, frames: list[PairBatch], online: bool, count: int = 100) -> dict:
    space = lifter.condition_space
    times = []
    for i in range(min(count, len(frames[0]))):
        previous = lifter.lift(_keypoints_2d(frames[0], i, space), frames[0].mask[i] > 0).points if online else None
        started = time.perf_counter()
        lifter.lift(_keypoints_2d(frames[1], i, space), frames[1].mask[i] > 0, previous=previous)
        times.append(time.perf_counter() - started)
    return {'median_ms': round(1e3 * float(np.median(times)), 2),
            'p95_ms': round(1e3 * float(np.percentile(times, 95)), 2)}


# ----------------------------------------------------------------------------------------------------- models
def _robot_section(kinematics: RobotKinematics) -> dict:
    return {'urdf': f'pybullet_data/{PANDA_URDF}', 'base_link': kinematics.base_link,
            'keypoint_links': list(kinematics.keypoint_links), 'joint_names': list(kinematics.joint_names),
            'lower': [float(v) for v in kinematics.lower], 'upper': [float(v) for v in kinematics.upper]}


def _training_section(args, record: dict, data: str, generator: RobotPairGenerator, batch_size: int,
                      network: nn.Module, architecture: str) -> dict:
    return {'data': data, 'generator': 'kp_pose_ros.training.robot_pairs.RobotPairGenerator',
            'generator_config': generator.config.as_dict(), 'seed': args.seed, 'batch_size': batch_size,
            **record, 'parameters': sum(p.numel() for p in network.parameters()), 'architecture': architecture,
            'machine': f'CPU, {torch.get_num_threads()} torch thread(s) on a {os.cpu_count()}-core '
                       f'{platform.machine()} machine shared with other jobs, torch {torch.__version__}',
            'note': 'trained on a CPU within the wall time above; the paper trains the score network 2000 epochs at '
                    'batch 4096 (and the joint network 720 epochs at batch 3600) on a GPU'}


def _lifter_manifest(name: str, task: str, kinematics: RobotKinematics, standardizer: Standardizer,
                     inputs: list[dict], outputs: list[dict], condition_section: dict, training: dict) -> dict:
    return {'name': name, 'task': task, 'robot': _robot_section(kinematics), 'inputs': inputs,
            'outputs': outputs, 'condition': condition_section,
            'standardization': {'mean': standardizer.mean.tolist(), 'scale': standardizer.scale.tolist(),
                                'units': 'm, camera optical frame'},
            'training': training}


def build_diffusion(args, kinematics, standardizer, space: str, path: Path,
                    regression_path: Path | None = None) -> None:
    """Train the score network; with ``regression_path``, also export its regression branch alone: trained on the
    same data, by its own loss, with its own gradient clipping, it is exactly the direct-regression baseline, so
    Table III compares the same regressor with and without the diffusion model around it."""
    n = len(kinematics.keypoint_links)
    camera = CameraModel.from_fov(*PAPER_EVAL_CAMERAS[NONCCS_TRAIN_CAMERA]) if space == 'pixels' else None
    generator = RobotPairGenerator(kinematics, seed=args.seed + (1 if space == 'pixels' else 0))
    torch.manual_seed(args.seed)
    regression = KeypointRegressor(n, args.regression_hidden, args.regression_blocks, UV_SCALE, standardizer,
                                   rays=space == 'nccs')
    net = ScoreNet(n, args.hidden, args.blocks, regression, seed=args.seed)
    steps = args.diffusion_steps if space == 'nccs' else args.nonccs_steps
    record = train(net, diffusion_loss(generator, standardizer, space, args.batch_size, args.weighting, camera),
                   steps, args.lr, path.stem)
    example = torch.randn(4, 3 * n)
    export_onnx(net, {'x': example, 't': torch.rand(4, 1) * 0.9 + 0.1, 'cond': example}, 'score', path)
    if space == 'nccs':
        cond_text = 'NCCS keypoints (x/z, y/z) times the mask (2N, keypoint-major), then the mask (N)'
        data = ('2D-3D pairs from forward kinematics: joints uniform within the limits, random camera poses and '
                'intrinsics (HFOV 55-95 deg, several image sizes), detector-like noise, dropout, truncation, outliers')
        condition_section = {'space': 'nccs', 'layout': cond_text}
    else:
        cond_text = f'raw pixels / {PIXEL_SCALE} times the mask (2N), then the mask (N)'
        w, h, fov = PAPER_EVAL_CAMERAS[NONCCS_TRAIN_CAMERA]
        data = (f'as robot_lifter_panda but every sample seen by one camera, {w}x{h} HFOV {fov} deg, '
                'conditioned on raw pixels: the ablation of RoboKeyGen Table IV')
        condition_section = {'space': 'pixels', 'pixel_scale': PIXEL_SCALE, 'layout': cond_text,
                             'trained_camera': {'width': w, 'height': h, 'hfov_deg': fov}}
    regression_text = (f'regression branch R(c): log pairwise 2D distances + residual MLP (hidden '
                       f'{args.regression_hidden}, {args.regression_blocks} blocks)'
                       + (', depth and ray correction per keypoint' if space == 'nccs' else ''))
    training = _training_section(
        args, record, data, generator, args.batch_size, net,
        f'{regression_text}; score of the residual X - R(c): residual MLP (hidden {args.hidden}, {args.blocks} '
        f'blocks) with adaptive LayerNorm on Gaussian Fourier time features and the condition, predicting v; '
        f'loss: denoising score matching, t ~ U(eps, 1), weighting "{args.weighting}" '
        f'(train_lifter.WEIGHTINGS), plus the squared error of R(c)')
    manifest = _lifter_manifest(
        path.stem, 'score network of the diffusion lifter: 2D robot keypoints -> 3D keypoints in the camera frame',
        kinematics, standardizer,
        [{'name': 'x', 'shape': ['batch', 3 * n], 'dtype': 'float32',
          'description': 'diffused 3D keypoints, standardised: (X_cam - mean) / scale, keypoint-major x, y, z'},
         {'name': 't', 'shape': ['batch', 1], 'dtype': 'float32', 'description': 'diffusion time in (0, 1]'},
         {'name': 'cond', 'shape': ['batch', 3 * n], 'dtype': 'float32', 'description': cond_text}],
        [{'name': 'score', 'shape': ['batch', 3 * n], 'dtype': 'float32',
          'description': 'grad_x log p_t(x | cond) in the standardised space'}],
        condition_section, training)
    manifest['sde'] = {'type': 'vp', 'beta_min': SDE.beta_min, 'beta_max': SDE.beta_max, 'T': SDE.T, 'eps': SDE.eps}
    manifest['sampler'] = dict(SAMPLER)
    write_manifest(path, manifest)
    if regression_path is None:
        return
    export_onnx(regression, {'cond': example}, 'X', regression_path)
    with torch.no_grad():
        batch = generator.sample(8192)
        mse = ((regression(_tensor(condition(batch, space))) - _tensor(standardizer(batch.X_cam))) ** 2).sum(1)
    training = dict(training, architecture=regression_text + '; loss: squared error of the standardised keypoints',
                    parameters=sum(p.numel() for p in regression.parameters()),
                    final_loss_mean_last_500=round(float(mse.mean()), 5),
                    trained_as=f'the regression branch of {path.stem}, exported alone (final_loss: its own loss on '
                               f'8192 fresh samples)')
    write_manifest(regression_path, _lifter_manifest(
        regression_path.stem, 'direct regression 2D robot keypoints -> 3D keypoints in the camera frame '
        '(RoboKeyGen Table III baseline, after Martinez et al. 2017)', kinematics, standardizer,
        [{'name': 'cond', 'shape': ['batch', 3 * n], 'dtype': 'float32', 'description': cond_text}],
        [{'name': 'X', 'shape': ['batch', 3 * n], 'dtype': 'float32',
          'description': 'standardised 3D keypoints: X_cam = X * scale + mean'}],
        condition_section, training))


def build_joints(args, kinematics, path: Path) -> None:
    n, j = len(kinematics.keypoint_links), kinematics.num_joints
    generator = RobotPairGenerator(kinematics, seed=args.seed + 3)
    rng = np.random.default_rng(args.seed + 3)
    torch.manual_seed(args.seed)
    net = JointNet(n, j, args.joint_hidden, 3)
    with torch.no_grad():
        sample = generator.sample(65536, corrupt=False)
        features = net.features(_tensor(perturb_skeleton(sample.X_cam, rng).reshape(len(sample), -1)))
        net.feature_mean.copy_(features.mean(0))
        net.feature_scale.copy_(features.std(0))
    record = train(net, joint_loss(generator, args.batch_size, rng), args.joint_steps, args.lr, path.stem)
    export_onnx(net, {'points': _tensor(sample.X_cam[:4].reshape(4, -1))}, 'sin_cos', path)
    manifest = {
        'name': path.stem,
        'task': '3D robot keypoints -> joint angles (RoboKeyGen III-C)',
        'robot': _robot_section(kinematics),
        'inputs': [{'name': 'points', 'shape': ['batch', 3 * n], 'dtype': 'float32',
                    'description': '3D keypoints in any frame (m), keypoint-major x, y, z'}],
        'outputs': [{'name': 'sin_cos', 'shape': ['batch', 2 * j], 'dtype': 'float32',
                     'description': '(sin q, cos q) per joint in joint_names order; q = atan2(sin, cos)'}],
        'invariance': 'the network sees only pairwise keypoint distances and triple products of offsets from the '
                      'base keypoint, so its output does not depend on the camera pose',
        'unobservable_joints': {
            'panda_joint1': 'turning it moves every keypoint about the base z axis, which a different camera pose '
                            'explains equally well: only the prior constrains it (pose fitting absorbs the error)',
            'panda_joint7': "turns the hand about its own axis, on which panda_hand's origin lies: only the prior "
                            'constrains it'},
        'shoulder_symmetry': '(q1 + pi, -q2, q3 + pi) puts every keypoint where (q1, q2, q3) does; the network '
                             'returns the representative with panda_joint2 <= 0 (train_lifter.canonical_shoulder)',
        'training': _training_section(
            args, record, 'forward kinematics of uniform random joints; keypoints perturbed by Gaussian noise '
            '(sigma 0-4 cm) and a global scale error (+-8 %), like lifted keypoints', generator, args.batch_size, net,
            f'residual MLP on invariant features, hidden {args.joint_hidden}, 3 blocks; loss: squared error of '
            f'(sin, cos)'),
    }
    write_manifest(path, manifest)


def _update_manifest(path: Path, key: str, value) -> None:
    with open(path.with_suffix('.yaml'), encoding='utf-8') as f:
        manifest = yaml.safe_load(f)
    manifest[key] = value
    write_manifest(path, manifest)


def evaluate_all(args, kinematics, names: dict[str, Path]) -> None:
    """Accuracy of every model on the held-out sets, written into the manifests' ``metrics`` sections."""
    sets = eval_sets(kinematics, args.seed, args.eval_sequences)
    description = (f'{args.eval_sequences} held-out 3-frame sequences per camera (generator seed {args.seed} + '
                   f'{EVAL_SEED_OFFSET} + camera index; joints step N(0, 0.03 rad) per frame, static camera); ADD of '
                   'the lifted 3D keypoints over frames 1-2 (m), AUC of ADD up to 0.1 m; gt_2d: exact projections '
                   '(truncation only), corrupted: plus the training corruption (noise, dropout, outliers)')
    if args.only in (None, 'diffusion', 'joints'):
        diffusion = DiffusionLifter(names['diffusion'], providers='cpu', seed=args.seed)
    if args.only in (None, 'diffusion'):
        metrics = {'description': description, 'cameras': {k: list(v) for k, v in PAPER_EVAL_CAMERAS.items()},
                   'add': evaluate_lifter(diffusion, sets, online=True),
                   'latency_cpu_1_thread': {
                       'single_frame': lift_latency(diffusion, sets[NONCCS_TRAIN_CAMERA]['corrupted'], False),
                       'online': lift_latency(diffusion, sets[NONCCS_TRAIN_CAMERA]['corrupted'], True)}}
        _update_manifest(names['diffusion'], 'metrics', metrics)
    if args.only in (None, 'nonccs'):
        nonccs = DiffusionLifter(names['nonccs'], providers='cpu', seed=args.seed)
        _update_manifest(names['nonccs'], 'metrics', {'description': description,
                                                      'add': evaluate_lifter(nonccs, sets, online=True)})
    if args.only in (None, 'diffusion'):
        regression = RegressionLifter(names['regression'], providers='cpu')
        _update_manifest(names['regression'], 'metrics', {'description': description,
                                                          'add': evaluate_lifter(regression, sets, online=False)})
    if args.only in (None, 'joints'):
        joints = JointRegressor(names['joints'], providers='cpu')
        _update_manifest(names['joints'], 'metrics', {
            'description': f'{args.eval_sequences} held-out samples at {NONCCS_TRAIN_CAMERA}, from the true '
                           f'keypoints and from keypoints lifted by robot_lifter_panda (single frame) from exact and '
                           f'corrupted 2D: mean absolute joint error (deg; shoulder symmetry resolved in the truth '
                           f'too) and ADD of the forward kinematics of the estimate rigidly aligned to the truth',
            'results': evaluate_joints(joints, diffusion, kinematics, sets)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, required=True, help='directory for the .onnx files and manifests')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--only', choices=('diffusion', 'nonccs', 'joints'),
                        help='train just this model (diffusion includes the regression baseline); the evaluation '
                             'of the others needs robot_lifter_panda in --out')
    parser.add_argument('--diffusion-steps', type=int, default=12000)
    parser.add_argument('--nonccs-steps', type=int, default=6000)
    parser.add_argument('--joint-steps', type=int, default=6000)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--hidden', type=int, default=256)
    parser.add_argument('--blocks', type=int, default=3)
    parser.add_argument('--regression-hidden', type=int, default=256)
    parser.add_argument('--regression-blocks', type=int, default=3)
    parser.add_argument('--weighting', choices=tuple(WEIGHTINGS), default='v',
                        help='lambda(t) of the score-matching loss (beta: the paper\'s; v: see WEIGHTINGS)')
    parser.add_argument('--joint-hidden', type=int, default=256)
    parser.add_argument('--eval-sequences', type=int, default=300)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads; on a shared 2-core machine 2 threads ran up to 10x slower than 1')
    parser.add_argument('--skip-eval', action='store_true', help='train and export only')
    parser.add_argument('--evaluate-only', action='store_true',
                        help='measure the models already in --out and rewrite their metrics sections')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    kinematics = panda_kinematics()
    names = {'diffusion': args.out / 'robot_lifter_panda.onnx', 'nonccs': args.out / 'robot_lifter_nonccs_panda.onnx',
             'regression': args.out / 'robot_lifter_regression_panda.onnx',
             'joints': args.out / 'robot_joints_panda.onnx'}
    if not args.evaluate_only:
        standardizer = Standardizer.fit(RobotPairGenerator(kinematics, seed=args.seed + 4))
        if args.only in (None, 'diffusion'):
            build_diffusion(args, kinematics, standardizer, 'nccs', names['diffusion'], names['regression'])
        if args.only in (None, 'nonccs'):
            build_diffusion(args, kinematics, standardizer, 'pixels', names['nonccs'])
        if args.only in (None, 'joints'):
            build_joints(args, kinematics, names['joints'])
    if not args.skip_eval:
        evaluate_all(args, kinematics, names)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
