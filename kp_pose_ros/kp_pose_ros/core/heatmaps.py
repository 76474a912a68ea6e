"""Keypoint heatmaps -> sub-pixel keypoint coordinates and a confidence per keypoint.

A network trained to draw a Gaussian of peak 1 at each keypoint is read at its maximum; the maximum alone quantises
the keypoint to the heatmap grid (4 input pixels at stride 4), so the peak is refined DARK-style (Zhang et al.,
"Distribution-Aware Coordinate Representation for Human Pose Estimation", CVPR 2020): the log of a Gaussian is a
quadratic, whose maximum one Newton step from the integer peak finds exactly. Smoothing the map first (the
"modulation" of DARK) keeps the network's ragged peaks close to a Gaussian. The peak value is the confidence: a
keypoint outside the image was trained towards an all-zero map.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# Floor before the logarithm: maps are ~[0, 1]; anything below is background and its curvature meaningless.
_LOG_FLOOR = 1e-10
# A Newton step further than this (heatmap pixels) means the peak is not a single smooth bump: keep the argmax.
_MAX_STEP = 1.0


def heatmap_to_input(coords, stride: float) -> np.ndarray:
    """Heatmap pixel coordinates (..., 2) -> network-input pixel coordinates, pixel centres at integers.

    Heatmap pixel j covers input pixels [j * stride, (j + 1) * stride), as area downsampling would.
    """
    return (np.asarray(coords, dtype=np.float64) + 0.5) * float(stride) - 0.5


def input_to_heatmap(points, stride: float) -> np.ndarray:
    """Inverse of heatmap_to_input (where training targets put a keypoint's Gaussian)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / float(stride) - 0.5


def decode_heatmaps(heatmaps, smoothing_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(coords (..., K, 2) as (x, y) heatmap pixels, confidence (..., K)) from heatmaps (..., K, H, W).

    Confidence is the map's maximum; the coordinates are that maximum refined by a Newton step on the log of the
    map smoothed with a Gaussian of `smoothing_sigma` heatmap pixels (0: no smoothing). Peaks on the map's border,
    or where the log-map is not concave, keep their integer position.
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim < 2 or maps.shape[-1] < 1 or maps.shape[-2] < 1:
        raise ValueError(f'heatmaps must be an (..., H, W) array, got shape {maps.shape}')
    if not np.isfinite(maps).all():
        raise ValueError('heatmaps contain NaN or infinite values')
    if not (np.isfinite(smoothing_sigma) and smoothing_sigma >= 0):
        raise ValueError(f'smoothing_sigma must be a finite number >= 0, got {smoothing_sigma}')
    lead, (height, width) = maps.shape[:-2], maps.shape[-2:]
    flat = maps.reshape(-1, height, width)
    count = flat.shape[0]
    peak = flat.reshape(count, -1).argmax(axis=1)
    rows, cols = np.divmod(peak, width)
    index = np.arange(count)
    confidence = flat[index, rows, cols]

    smooth = gaussian_filter(flat, (0.0, smoothing_sigma, smoothing_sigma), mode='nearest') if smoothing_sigma > 0 \
        else flat
    log_map = np.log(np.maximum(smooth, _LOG_FLOOR)).astype(np.float64)
    inner = (rows >= 1) & (rows <= height - 2) & (cols >= 1) & (cols <= width - 2)
    r, c = np.clip(rows, 1, max(height - 2, 1)), np.clip(cols, 1, max(width - 2, 1))

    def at(dr: int, dc: int) -> np.ndarray:
        return log_map[index, np.clip(r + dr, 0, height - 1), np.clip(c + dc, 0, width - 1)]

    centre = at(0, 0)
    dx, dy = 0.5 * (at(0, 1) - at(0, -1)), 0.5 * (at(1, 0) - at(-1, 0))
    dxx, dyy = at(0, 1) - 2.0 * centre + at(0, -1), at(1, 0) - 2.0 * centre + at(-1, 0)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    concave = inner & (dxx < 0) & (det > 0)
    safe_det = np.where(concave, det, 1.0)
    step_x = -(dyy * dx - dxy * dy) / safe_det
    step_y = -(dxx * dy - dxy * dx) / safe_det
    accept = concave & (np.abs(step_x) <= _MAX_STEP) & (np.abs(step_y) <= _MAX_STEP)
    coords = np.stack([cols + np.where(accept, step_x, 0.0), rows + np.where(accept, step_y, 0.0)], axis=-1)
    return coords.reshape(lead + (2,)), confidence.astype(np.float64).reshape(lead)
