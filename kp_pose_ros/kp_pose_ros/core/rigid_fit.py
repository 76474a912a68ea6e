"""Rigid pose from keypoint correspondences: 3D-3D (Umeyama + RANSAC + robust reweighting) and 3D-2D (PnP RANSAC).

Keypoints come from networks, so some are missing (NaN rows, skipped) and a few are grossly wrong (a keypoint put on the
wrong link). With 7-9 keypoints per robot, both fitters sample minimal sets, keep the consensus, refit on it, and
report per-keypoint residuals so the caller can see which keypoints were rejected.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike

from kp_pose_ros.core.transforms import make_transform

# cov = sum w (dst - mean)(src - mean)^T has rank < 2 when the points are collinear or coincident: the rotation about
# their line is then undetermined. Exactly collinear points give a ratio of singular values near 1e-16.
_RANK_TOLERANCE = 1e-10
_LOSSES = ('huber', 'cauchy')
# Coefficient counts OpenCV's pinhole functions accept (plumb_bob 5, rational_polynomial 8, ...).
_OPENCV_D_LENGTHS = (0, 4, 5, 8, 12, 14)


class DegenerateGeometryError(ValueError):
    """Correspondences that do not determine a rotation (collinear or coincident points)."""


@dataclass(frozen=True, eq=False)
class PoseFitResult:
    """Outcome of a robust fit over N correspondences.

    ``T`` maps the first argument's frame into the second's (dst <- src, camera <- object); None when ``success`` is
    False, with ``message`` saying why. ``residuals`` are metres (3D fits) or pixels (PnP), NaN for skipped rows;
    ``inliers`` is False for skipped rows; ``rms`` is over the inliers.
    """

    success: bool
    T: np.ndarray | None
    inliers: np.ndarray
    residuals: np.ndarray
    rms: float
    message: str = ''

    @property
    def num_inliers(self) -> int:
        return int(np.count_nonzero(self.inliers))


def _failure(n: int, message: str, residuals: np.ndarray | None = None) -> PoseFitResult:
    residuals = np.full(n, np.nan) if residuals is None else residuals
    return PoseFitResult(False, None, np.zeros(n, dtype=bool), residuals, math.nan, message)


def _points(value, columns: int, name: str) -> np.ndarray:
    points = np.asarray(value, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != columns:
        raise ValueError(f'{name} must have shape (N, {columns}), got {points.shape}')
    return points


def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,):
        raise ValueError(f'weights must have shape ({n},), got {weights.shape}')
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError('weights must be finite and >= 0')
    return weights


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite number > 0, got {value}')
    return value


def _umeyama_batch(src: np.ndarray, dst: np.ndarray, w: np.ndarray, with_scale: bool):
    """Weighted Umeyama fits of H point sets at once: src, dst (H, M, 3), w (H, M) -> R, t, s, non-degenerate mask."""
    w = w / w.sum(axis=1, keepdims=True)
    mu_src = np.einsum('hm,hmk->hk', w, src)
    mu_dst = np.einsum('hm,hmk->hk', w, dst)
    xs = src - mu_src[:, None]
    xd = dst - mu_dst[:, None]
    cov = np.einsum('hm,hmi,hmj->hij', w, xd, xs)
    U, S, Vt = np.linalg.svd(cov)
    # Flipping the weakest direction when U Vt is a reflection gives the best proper rotation (Umeyama 1991, eq. 39).
    d = np.ones((len(S), 3))
    d[:, 2] = np.where(np.linalg.det(U) * np.linalg.det(Vt) < 0, -1.0, 1.0)
    R = (U * d[:, None, :]) @ Vt
    if with_scale:
        var_src = np.einsum('hm,hmk->h', w, xs * xs)
        s = np.einsum('hk,hk->h', S, d) / np.where(var_src > 0, var_src, np.inf)
    else:
        s = np.ones(len(S))
    t = mu_dst - s[:, None] * np.einsum('hij,hj->hi', R, mu_src)
    ok = S[:, 1] > _RANK_TOLERANCE * S[:, 0]
    return R, t, s, ok


def umeyama(src: ArrayLike, dst: ArrayLike, weights: ArrayLike | None = None, with_scale: bool = False
            ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, float]:
    """Least-squares R (det +1), t [, s] with dst ~ s R src + t, over every row (N >= 3 finite, non-collinear points).

    Missing keypoints must be dropped first (or use robust_rigid_fit, which skips them).
    """
    src, dst = _points(src, 3, 'src'), _points(dst, 3, 'dst')
    if src.shape != dst.shape:
        raise ValueError(f'src and dst must have the same shape, got {src.shape} and {dst.shape}')
    n = len(src)
    if n < 3:
        raise ValueError(f'a rigid fit needs at least 3 correspondences, got {n}')
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError('src or dst contains NaN or infinite values; drop missing keypoints first '
                         '(robust_rigid_fit skips them)')
    w = _weights(weights, n)
    if np.count_nonzero(w) < 3:
        raise ValueError(f'a rigid fit needs at least 3 correspondences with weight > 0, got {np.count_nonzero(w)}')
    R, t, s, ok = _umeyama_batch(src[None], dst[None], w[None], with_scale)
    if not ok[0]:
        raise DegenerateGeometryError('the points are collinear or coincident: the rotation is undetermined')
    return (R[0], t[0], float(s[0])) if with_scale else (R[0], t[0])


def _residuals(R: np.ndarray, t: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Distances |R src + t - dst| for H hypotheses (R (H,3,3), t (H,3)) over M points: (H, M)."""
    return np.linalg.norm(np.einsum('hij,mj->hmi', R, src) + t[:, None] - dst, axis=2)


def _minimal_sets(n: int, max_hypotheses: int, seed: int) -> np.ndarray:
    """All 3-point subsets when there are few enough (typical with 7-9 keypoints), else random distinct triples."""
    if math.comb(n, 3) <= max_hypotheses:
        return np.array(list(itertools.combinations(range(n), 3)))
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((max_hypotheses, n)), axis=1)[:, :3]


def rigid_hypotheses(src: ArrayLike, dst: ArrayLike, max_hypotheses: int = 500, seed: int = 0) -> np.ndarray:
    """Poses T (dst <- src), (H, 4, 4), fitted to 3-point subsets of the valid pairs (all subsets when few enough),
    degenerate subsets left out: the candidates for a caller that verifies them with other evidence than the pairs
    themselves (e.g. depth, which tells true keypoints from a detector's confident guesses)."""
    src, dst = _points(src, 3, 'src'), _points(dst, 3, 'dst')
    if src.shape != dst.shape:
        raise ValueError(f'src and dst must have the same shape, got {src.shape} and {dst.shape}')
    index = np.flatnonzero(np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1))
    if len(index) < 3:
        return np.zeros((0, 4, 4))
    sets = index[_minimal_sets(len(index), max_hypotheses, seed)]
    R, t, _, ok = _umeyama_batch(src[sets], dst[sets], np.ones(sets.shape), False)
    T = np.zeros((int(ok.sum()), 4, 4))
    T[:, :3, :3], T[:, :3, 3], T[:, 3, 3] = R[ok], t[ok], 1.0
    return T


def _robust_weights(r: np.ndarray, loss: str, scale: float) -> np.ndarray:
    u = r / scale
    if loss == 'huber':
        return np.minimum(1.0, 1.0 / np.maximum(u, 1e-300))
    return 1.0 / (1.0 + u * u)


def robust_rigid_fit(src: ArrayLike, dst: ArrayLike, inlier_threshold_m: float, *, weights: ArrayLike | None = None,
                     max_hypotheses: int = 500, seed: int = 0, loss: str | None = 'cauchy',
                     loss_scale_m: float | None = None, irls_iterations: int = 10,
                     min_inliers: int = 3) -> PoseFitResult:
    """Rigid T (dst <- src) from 3D keypoint pairs with missing (NaN) rows and gross outliers.

    MSAC over 3-point sets (exhaustive up to ``max_hypotheses`` sets, else sampled with ``seed``), refit on the
    consensus set until it stops changing, then iteratively reweighted least squares with a Huber or Cauchy kernel
    (scale ``loss_scale_m``, default half the threshold) over that set, so borderline keypoints count less without
    letting the rejected ones back in. ``weights`` (e.g. detector confidences) scale every refit; rows with weight 0
    are skipped like NaN rows.
    """
    src, dst = _points(src, 3, 'src'), _points(dst, 3, 'dst')
    if src.shape != dst.shape:
        raise ValueError(f'src and dst must have the same shape, got {src.shape} and {dst.shape}')
    threshold = _positive(inlier_threshold_m, 'inlier_threshold_m')
    if loss is not None and loss not in _LOSSES:
        raise ValueError(f'loss must be one of {_LOSSES} or None, got {loss!r}')
    scale = threshold / 2.0 if loss_scale_m is None else _positive(loss_scale_m, 'loss_scale_m')
    if max_hypotheses < 1 or irls_iterations < 0 or min_inliers < 3:
        raise ValueError('need max_hypotheses >= 1, irls_iterations >= 0 and min_inliers >= 3')
    n = len(src)
    w_all = _weights(weights, n)
    valid = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1) & (w_all > 0)
    index = np.flatnonzero(valid)
    if len(index) < 3:
        return _failure(n, f'only {len(index)} of {n} correspondences are valid; a rigid fit needs 3')
    src_v, dst_v, w_v = src[index], dst[index], w_all[index]

    sets = _minimal_sets(len(index), max_hypotheses, seed)
    R, t, _, ok = _umeyama_batch(src_v[sets], dst_v[sets], np.ones(sets.shape), False)
    cost = np.minimum(_residuals(R, t, src_v, dst_v), threshold) ** 2
    total = np.where(ok, cost.sum(axis=1), np.inf)
    best = int(np.argmin(total))
    if not ok[best]:
        return _failure(n, 'every 3-point subset is collinear: the rotation is undetermined')
    R, t = R[best], t[best]

    def refit(mask: np.ndarray, extra: np.ndarray | float = 1.0):
        Rn, tn, _, okn = _umeyama_batch(src_v[mask][None], dst_v[mask][None], (w_v[mask] * extra)[None], False)
        return (Rn[0], tn[0]) if okn[0] else None

    consensus = _residuals(R[None], t[None], src_v, dst_v)[0] < threshold
    for _ in range(len(index)):
        fit = refit(consensus)
        if fit is None:
            break
        R, t = fit
        updated = _residuals(R[None], t[None], src_v, dst_v)[0] < threshold
        if np.array_equal(updated, consensus) or np.count_nonzero(updated) < 3:
            break
        consensus = updated

    if loss is not None:
        for _ in range(irls_iterations):
            r = _residuals(R[None], t[None], src_v[consensus], dst_v[consensus])[0]
            fit = refit(consensus, _robust_weights(r, loss, scale))
            if fit is None:
                break
            step = max(np.abs(fit[0] - R).max(), np.abs(fit[1] - t).max())
            R, t = fit
            if step < 1e-12:
                break

    residuals = np.full(n, np.nan)
    residuals[index] = _residuals(R[None], t[None], src_v, dst_v)[0]
    inliers = valid & (residuals < threshold)
    if np.count_nonzero(inliers) < min_inliers:
        return _failure(n, f'only {np.count_nonzero(inliers)} keypoints within {threshold} m of the best pose; '
                           f'{min_inliers} required', residuals)
    rms = float(np.sqrt(np.mean(residuals[inliers] ** 2)))
    return PoseFitResult(True, make_transform(R, t), inliers, residuals, rms)


def _intrinsics(K, D) -> tuple[np.ndarray, np.ndarray]:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f'K must be a finite 3x3 camera matrix with positive focal lengths, got {K.tolist()}')
    D = np.zeros(0) if D is None else np.asarray(D, dtype=np.float64).reshape(-1)
    if D.size not in _OPENCV_D_LENGTHS or not np.all(np.isfinite(D)):
        raise ValueError(f'D must hold 0, 4, 5, 8, 12 or 14 finite OpenCV distortion coefficients, got {D.tolist()} '
                         '(undistort fisheye pixels first)')
    return K, D


def pnp_ransac(object_points: ArrayLike, image_points: ArrayLike, K: ArrayLike, D: ArrayLike | None = None,
               reprojection_error_px: float = 5.0, *,
               iterations: int = 200, confidence: float = 0.999, min_inliers: int = 4) -> PoseFitResult:
    """Pose T (camera <- object) from 3D keypoints and their pixels, robust to missing (NaN) rows and outliers.

    Three OpenCV solvers, each for what it is good at:
    - RANSAC with SOLVEPNP_AP3P draws 4-point samples instead of the 5 EPnP needs; with 7 keypoints and 2 outliers
      a sample is clean 1 time in 7 instead of 1 in 21, so far fewer iterations find the pose.
    - SOLVEPNP_SQPNP on the inliers: a globally optimal solution that needs no initial guess and copes with the
      near-planar keypoint layouts an arm takes (where EPnP, OpenCV's default refit after AP3P, is unstable).
    - solvePnPRefineLM on the inliers minimises the reprojection error itself.
    OpenCV's RANSAC seeds its own generator with a constant, so results are repeatable.
    """
    obj, img = _points(object_points, 3, 'object_points'), _points(image_points, 2, 'image_points')
    if len(obj) != len(img):
        raise ValueError(f'object_points and image_points differ in length: {len(obj)} vs {len(img)}')
    K, D = _intrinsics(K, D)
    threshold = _positive(reprojection_error_px, 'reprojection_error_px')
    if iterations < 1 or not 0 < confidence < 1 or min_inliers < 4:
        raise ValueError('need iterations >= 1, 0 < confidence < 1 and min_inliers >= 4')
    n = len(obj)
    valid = np.isfinite(obj).all(axis=1) & np.isfinite(img).all(axis=1)
    index = np.flatnonzero(valid)
    if len(index) < 4:
        return _failure(n, f'only {len(index)} of {n} keypoints are valid; PnP needs 4')
    obj_v, img_v = np.ascontiguousarray(obj[index]), np.ascontiguousarray(img[index])
    try:
        found, rvec, tvec, ransac_inliers = cv2.solvePnPRansac(
            obj_v, img_v, K, D, iterationsCount=int(iterations), reprojectionError=threshold,
            confidence=float(confidence), flags=cv2.SOLVEPNP_AP3P)
        if not found or ransac_inliers is None or len(ransac_inliers) < 4:
            return _failure(n, 'PnP RANSAC found no pose with 4 keypoints within the reprojection threshold')
        inl = ransac_inliers.reshape(-1)
        found, rvec, tvec = cv2.solvePnP(obj_v[inl], img_v[inl], K, D, flags=cv2.SOLVEPNP_SQPNP)
        if not found:
            return _failure(n, 'SQPnP failed on the RANSAC inliers')
        rvec, tvec = cv2.solvePnPRefineLM(obj_v[inl], img_v[inl], K, D, rvec, tvec)
        projected, _ = cv2.projectPoints(obj_v, rvec, tvec, K, D)
    except cv2.error as err:
        return _failure(n, f'OpenCV PnP failed: {err.err or err}')
    R = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    residuals = np.full(n, np.nan)
    residuals[index] = np.linalg.norm(projected.reshape(-1, 2) - img_v, axis=1)
    inliers = valid & (residuals < threshold)
    depth = obj[inliers] @ R[2] + t[2]
    if np.any(depth <= 0):
        return _failure(n, 'the PnP pose puts inlier keypoints behind the camera', residuals)
    if np.count_nonzero(inliers) < min_inliers:
        return _failure(n, f'only {np.count_nonzero(inliers)} keypoints reproject within {threshold} px; '
                           f'{min_inliers} required', residuals)
    rms = float(np.sqrt(np.mean(residuals[inliers] ** 2)))
    return PoseFitResult(True, make_transform(R, t), inliers, residuals, rms)


def p3p_hypotheses(object_points: ArrayLike, image_points: ArrayLike, K: ArrayLike,
                   max_sets: int = 200, seed: int = 0) -> np.ndarray:
    """Every pose T (camera <- object), (H, 4, 4), that fits some 3 keypoints exactly (P3P: up to 4 per subset).

    Pixels must be undistorted (pinhole K). Three points are the least a pose needs, so an arm cut by the image
    border, with three true keypoints among confident wrong ones, still has its pose among these; the caller must
    verify them with other evidence (e.g. depth).
    """
    obj, img = _points(object_points, 3, 'object_points'), _points(image_points, 2, 'image_points')
    if len(obj) != len(img):
        raise ValueError(f'object_points and image_points differ in length: {len(obj)} vs {len(img)}')
    K, _ = _intrinsics(K, None)
    index = np.flatnonzero(np.isfinite(obj).all(axis=1) & np.isfinite(img).all(axis=1))
    poses = []
    if len(index) >= 3:
        for subset in index[_minimal_sets(len(index), max_sets, seed)]:
            try:
                count, rvecs, tvecs = cv2.solveP3P(np.ascontiguousarray(obj[subset]),
                                                   np.ascontiguousarray(img[subset]), K, None,
                                                   flags=cv2.SOLVEPNP_P3P)
            except cv2.error:
                continue
            for rvec, tvec in zip(rvecs[:count], tvecs[:count]):
                if np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec)):  # degenerate subsets give NaN poses
                    poses.append(make_transform(cv2.Rodrigues(rvec)[0], np.asarray(tvec).reshape(3)))
    return np.array(poses).reshape(-1, 4, 4)
