"""Keypoints from predicted point-to-keypoint distances by 3D radius voting (PAGE §4.3, proposal integration scoring).

A network predicts, for each observed point p_i, its distance r_ik to every keypoint k; keypoint k is where the spheres
|x - p_i| = r_ik meet. Point i votes for each cell of an accumulator of resolution rho whose centre c lies within rho of
its sphere (| |c - p_i| - r_ik | <= rho), and a cell scores the share of the voters (by weight) that voted for it.

A dense accumulator over the search region (the points' bounding box grown by the largest radius) holds millions of
5 mm cells, so the search is coarse-to-fine and costs O(levels * beam * voters): a coarse grid is scored with the
tolerance widened by half a cell diagonal, so a cell counts every vote any point inside it could get and the best cell
is not pruned for being coarse; the best few cells (the beam) are split in eight and rescored until cells are rho wide.
Coarse levels count a strided subset of the voters in float32; the chosen cell's score counts all of them in float64.
A beam is not an exhaustive search: where cells tie or nearly tie it may keep a cell a few votes short of the best.
The chosen cell's centre is then refined below the cell size by robust Gauss-Newton on sum_i w_i (|x - p_i| - r_ik)^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# The 8 children of a cell, as offsets of their lattice indices from twice the parent's.
_CHILDREN = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)
# Smallest ratio of singular values of the refined Jacobian: below it the spheres meet in a curve (coincident or
# collinear voters), not a point, and the keypoint is left NaN.
_RANK_TOLERANCE = 1e-6
# Refinement stops once every keypoint moves less than this (metres).
_STEP_TOLERANCE_M = 1e-7
# Smallest Tukey scale of the refinement, in rho (exact radii drive the residuals, and so the scale, to 0).
_MIN_SCALE_RHO = 1e-3


@dataclass(frozen=True)
class VotingConfig:
    """Accumulator and refinement settings (distances in metres).

    rho_m: accumulator resolution at the finest level and the vote tolerance: cells are the lattice of rho-wide cubes
        with centres at rho * (i + 1/2), i integer, in the input's frame.
    coarse_cells: cells per axis of the first level, whose cell width is rho * 2^L for the smallest L that fits the
        search region in coarse_cells - 1 cells (so the region is covered however it sits on the lattice).
    beam: cells kept per keypoint at each level; each is split into 8 for the next, and at the finest level the beam
        (ranked by the strided voters) is rescored with all voters.
    coarse_voters: at most this many voters per keypoint score the coarse levels (an even, deterministic stride
        through them); the finest level and the score use all voters.
    min_voters: keypoints with fewer voters are NaN (three spheres meet in two points).
    refine_iterations: most Gauss-Newton iterations of the sub-voxel refinement.
    refine_radius_rho: the refinement's largest Tukey scale in units of rho: voters further than this from their
        sphere at the current estimate have no weight, nearer ones a weight falling smoothly to 0 at it.
    """

    rho_m: float = 0.005
    coarse_cells: int = 8
    beam: int = 32
    coarse_voters: int = 256
    min_voters: int = 4
    refine_iterations: int = 6
    refine_radius_rho: float = 3.0

    def __post_init__(self):
        if not (math.isfinite(self.rho_m) and self.rho_m > 0):
            raise ValueError(f'rho_m must be a finite number > 0, got {self.rho_m}')
        if not (math.isfinite(self.refine_radius_rho) and self.refine_radius_rho >= 1):
            raise ValueError(f'refine_radius_rho must be finite and >= 1, got {self.refine_radius_rho}')
        for name, least in (('coarse_cells', 2), ('beam', 1), ('coarse_voters', 1), ('min_voters', 1),
                            ('refine_iterations', 0)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f'{name} must be an integer >= {least}, got {value!r}')


@dataclass(frozen=True, eq=False)
class VoteResult:
    """Voted keypoints, one row per keypoint.

    keypoints: (K, 3) refined keypoints, NaN rows where none could be voted (too few voters, or spheres that do not
        meet in a point). cells: (K, 3) centres of the chosen rho-cells (NaN likewise). scores: (K,) the chosen cell's
        votes / voters at resolution rho, by weight, in [0, 1]; 0 for NaN rows. inliers: (K,) number of voters within
        rho of their sphere at the refined keypoint; 0 for NaN rows.
    """

    keypoints: np.ndarray
    cells: np.ndarray
    scores: np.ndarray
    inliers: np.ndarray


def _weights(weights, n: int, k: int) -> np.ndarray:
    if weights is None:
        return np.ones((n, k))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape == (n,):
        weights = np.repeat(weights[:, None], k, axis=1)
    if weights.shape != (n, k):
        raise ValueError(f'weights must have shape ({n},) or ({n}, {k}), got {weights.shape}')
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError('weights must be finite and >= 0')
    return weights


def _gather_voters(points: np.ndarray, radii: np.ndarray, weights: np.ndarray, valid: np.ndarray):
    """Per keypoint (column), its voters: points (K, V, 3), radii and weights (K, V), V the most voters of a
    keypoint, padded with copies of the keypoint's first voter at weight 0."""
    count = valid.sum(axis=0)
    order = np.argsort(~valid, axis=0, kind='stable')[:count.max()].T  # (K, V) voter rows, valid ones first
    keep = np.arange(order.shape[1]) < count[:, None]
    order = np.where(keep, order, order[:, :1])
    columns = np.arange(order.shape[0])[:, None]
    return points[order], radii[order, columns], np.where(keep, weights[order, columns], 0.0), count


def _stride(P: np.ndarray, R: np.ndarray, W: np.ndarray, count: np.ndarray, most: int):
    """At most `most` voters per keypoint, evenly spread through each keypoint's voters."""
    if P.shape[1] <= most:
        return P, R, W
    j = np.arange(most)
    pick = np.where(count[:, None] > most, j * count[:, None] // most, j)
    W = np.where(j < count[:, None], np.take_along_axis(W, pick, axis=1), 0.0)
    return np.take_along_axis(P, pick[..., None], axis=1), np.take_along_axis(R, pick, axis=1), W


def _cell_scores(centres: np.ndarray, P: np.ndarray, R: np.ndarray, W: np.ndarray, tol: float,
                 dtype) -> np.ndarray:
    """Weight of the voters within tol of their sphere at each centre: (K, M) for centres (K, M, 3), voters (K, V).

    | |c - p| - r | <= tol is (r - tol)^2 <= |c - p|^2 <= (r + tol)^2, i.e. | |c|^2 + |p|^2 - 2 c.p - mid | <= half
    with mid, half the interval's centre and half-width, evaluated as one matrix product on homogeneous coordinates.
    """
    lower = np.where(R > tol, (R - tol) ** 2, -((R + tol) ** 2))
    upper = (R + tol) ** 2
    mid, half = (upper + lower) / 2, (upper - lower) / 2
    c = np.concatenate([centres, (centres ** 2).sum(-1, keepdims=True), np.ones(centres.shape[:2] + (1,))], axis=2)
    p = np.concatenate([-2.0 * P, np.ones(P.shape[:2] + (1,)), ((P ** 2).sum(-1) - mid)[..., None]], axis=2)
    t = np.matmul(c.astype(dtype), p.astype(dtype).transpose(0, 2, 1))
    np.abs(t, out=t)
    np.less_equal(t, half.astype(dtype)[:, None, :], out=t, casting='unsafe')  # 1 inside, 0 outside
    return np.matmul(t, W.astype(dtype)[..., None])[..., 0]


def _search(P: np.ndarray, R: np.ndarray, W: np.ndarray, count: np.ndarray, origin: np.ndarray, lo: np.ndarray,
            hi: np.ndarray, config: VotingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Coarse-to-fine beam search; returns the chosen rho-cells' centres (K, 3) and the weight of their votes (K,)."""
    rho, n = config.rho_m, config.coarse_cells
    extent = float((hi - lo).max())
    level = max(0, math.ceil(math.log2(max(extent / ((n - 1) * rho), 1.0))))
    first = np.floor(lo / (rho * 2 ** level)).astype(np.int64)
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing='ij'), axis=-1).reshape(-1, 3)
    cells = first[:, None, :] + grid  # (K, M, 3) lattice indices at the current level
    coarse = _stride(P, R, W, count, config.coarse_voters)
    while True:
        size = rho * 2 ** level
        centres = (cells + 0.5) * size - origin[:, None, :]
        scores = _cell_scores(centres, *coarse, rho + size * math.sqrt(3) / 2 if level else rho, np.float32)
        if scores.shape[1] > config.beam:
            best = np.argpartition(-scores, config.beam - 1, axis=1)[:, :config.beam]
            cells = np.take_along_axis(cells, best[..., None], axis=1)
        if level == 0:
            # The few best by the strided voters, rescored by all of them.
            scores = _cell_scores((cells + 0.5) * rho - origin[:, None, :], P, R, W, rho, np.float64)
            best = scores.argmax(axis=1)
            rows = np.arange(len(cells))
            return (cells[rows, best] + 0.5) * rho, scores[rows, best]
        cells = (2 * cells[:, :, None, :] + _CHILDREN).reshape(len(cells), -1, 3)
        level -= 1


def _refine(x: np.ndarray, P: np.ndarray, R: np.ndarray, W: np.ndarray, config: VotingConfig):
    """Robust (Tukey) Gauss-Newton on sum_i w_i (|x - p_i| - r_i)^2 from x (K, 3).

    The Tukey scale starts at refine_radius_rho and then follows the weighted RMS residual (4.685 sigma, Tukey's usual
    constant, within [_MIN_SCALE_RHO, refine_radius_rho] rho), so exact radii are fitted exactly even where other
    keypoints' spheres pass within a few rho. Returns x, whether each keypoint's spheres determine it (Jacobian of
    full rank) and the number of its voters within rho of their sphere at x.
    """
    largest = config.refine_radius_rho * config.rho_m
    scale = np.full((len(x), 1), largest)
    step = np.full(len(x), np.inf)
    P = np.ascontiguousarray(P.transpose(0, 2, 1))  # (K, 3, V): the products below then read rows
    for iteration in range(config.refine_iterations + 1):
        diff = x[:, :, None] - P
        d = np.sqrt(np.einsum('kiv,kiv->kv', diff, diff))
        r = d - R
        w = r / scale
        w *= w
        np.subtract(1.0, w, out=w)
        np.maximum(w, 0.0, out=w)
        w *= w
        w *= W  # Tukey weights
        # With u = (x - p) / d = d|x - p|/dx: J^T w J = sum w u u^T, J^T w r = sum w r u.
        diff /= np.maximum(d, 1e-300)[:, None, :]
        weighted = diff * w[:, None, :]
        A = np.matmul(weighted, diff.transpose(0, 2, 1))
        g = np.matmul(weighted, r[..., None])[..., 0]
        if iteration == config.refine_iterations or np.all(step < _STEP_TOLERANCE_M):
            break
        # Levenberg damping keeps the solve defined; the step is capped at the largest Tukey scale.
        damping = 1e-12 * np.trace(A, axis1=1, axis2=2) + 1e-300
        delta = -np.linalg.solve(A + damping[:, None, None] * np.eye(3), g[..., None])[..., 0]
        step = np.linalg.norm(delta, axis=1)
        x = x + delta * np.minimum(1.0, largest / np.maximum(step, 1e-300))[:, None]
        rms = np.sqrt((w * r * r).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-300))
        scale = np.clip(4.685 * rms, _MIN_SCALE_RHO * config.rho_m, largest)[:, None]
    s = np.linalg.eigvalsh(A)
    determined = s[:, 0] > _RANK_TOLERANCE ** 2 * s[:, 2]
    return x, determined, ((np.abs(r) <= config.rho_m) & (W > 0)).sum(axis=1)


def vote_keypoints(points: ArrayLike, radii: ArrayLike, weights: ArrayLike | None = None,
                   config: VotingConfig = VotingConfig()) -> VoteResult:
    """Vote K keypoints from N points and their predicted radii.

    points (N, 3) metres; radii (N, K) metres, a NaN, infinite or negative radius (or a point with a NaN coordinate)
    abstains; weights None, (N,) or (N, K), finite and >= 0, a zero weight abstains. Raises ValueError for shapes
    that do not match or invalid weights.
    """
    points = np.asarray(points, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f'points must have shape (N, 3), got {points.shape}')
    if radii.ndim != 2 or radii.shape[0] != points.shape[0]:
        raise ValueError(f'radii must have shape ({points.shape[0]}, K), got {radii.shape}')
    n, k = radii.shape
    weights = _weights(weights, n, k)
    keypoints, cells = np.full((k, 3), np.nan), np.full((k, 3), np.nan)
    scores, inliers = np.zeros(k), np.zeros(k, dtype=np.int64)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(points).all(axis=1)[:, None] & np.isfinite(radii) & (radii >= 0) & (weights > 0)
    active = np.flatnonzero(valid.sum(axis=0) >= config.min_voters)
    if len(active) == 0:
        return VoteResult(keypoints, cells, scores, inliers)
    P, R, W, count = _gather_voters(points, radii[:, active], weights[:, active], valid[:, active])
    lo, hi = P.min(axis=1) - R.max(axis=1, keepdims=True), P.max(axis=1) + R.max(axis=1, keepdims=True)
    origin = (lo + hi) / 2
    P = P - origin[:, None, :]  # centred, so that the float32 scores of the coarse levels keep their precision
    cell, score = _search(P, R, W, count, origin, lo, hi, config)
    x, determined, agree = _refine(cell - origin, P, R, W, config)
    ok = active[determined]
    keypoints[ok], cells[ok] = (x + origin)[determined], cell[determined]
    scores[ok], inliers[ok] = (score / W.sum(axis=1))[determined], agree[determined]
    return VoteResult(keypoints, cells, scores, inliers)
