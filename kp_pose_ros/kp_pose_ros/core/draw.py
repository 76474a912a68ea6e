"""Overlays for debug images and demo output: keypoints, skeletons, depth colour maps (OpenCV, arrays in/out)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from kp_pose_ros.core.atomic_file import atomic_open


def draw_skeleton(rgb: np.ndarray, points_px: np.ndarray, edges: Sequence[tuple[int, int]],
                  color: tuple[int, int, int], valid: np.ndarray | None = None, radius: int = 4,
                  thickness: int = 2) -> np.ndarray:
    """Copy of `rgb` (HxWx3 uint8) with keypoints and the edges between them; NaN or invalid points are skipped."""
    out = np.ascontiguousarray(rgb).copy()
    pts = np.asarray(points_px, dtype=float).reshape(-1, 2)
    ok = np.all(np.isfinite(pts), axis=1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    shift = 4  # sub-pixel drawing
    ipts = np.round(np.where(ok[:, None], pts, 0) * (1 << shift)).astype(np.int64)
    for i, j in edges:
        if ok[i] and ok[j]:
            cv2.line(out, tuple(int(v) for v in ipts[i]), tuple(int(v) for v in ipts[j]), color, thickness,
                     cv2.LINE_AA, shift)
    for i in np.flatnonzero(ok):
        cv2.circle(out, tuple(int(v) for v in ipts[i]), radius << shift, color, -1, cv2.LINE_AA, shift)
    return out


def draw_box(rgb: np.ndarray, box, color: tuple[int, int, int], label: str = '', thickness: int = 2) -> np.ndarray:
    """Copy of `rgb` with an xyxy box (pixels) outlined and `label` written above its top-left corner."""
    out = np.ascontiguousarray(rgb).copy()
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
    if label:
        cv2.putText(out, label, (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return out


def draw_axes(rgb: np.ndarray, axes_px: np.ndarray, thickness: int = 2) -> np.ndarray:
    """Copy of `rgb` with a frame's projected axes: `axes_px` (4, 2) is its origin and the x, y, z tips, drawn red,
    green, blue as in RViz."""
    out = rgb
    for tip, color in zip((1, 2, 3), ((255, 0, 0), (0, 255, 0), (0, 0, 255))):
        out = draw_skeleton(out, np.asarray(axes_px)[[0, tip]], [(0, 1)], color, radius=0, thickness=thickness)
    return out


def chain_edges(n: int) -> list[tuple[int, int]]:
    """Edges of a serial chain of n keypoints (base to tip), the skeleton of an arm."""
    return [(i, i + 1) for i in range(n - 1)]


def colorize_depth(depth_m: np.ndarray, max_m: float | None = None) -> np.ndarray:
    """Depth in metres (NaN = no return) as a colour image; no-return pixels black."""
    depth = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    top = max_m if max_m is not None else (float(np.percentile(depth[valid], 99)) if valid.any() else 1.0)
    scaled = np.clip(np.where(valid, depth, 0) / max(top, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    color = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    color[~valid] = 0
    return color


def write_png(path, rgb: np.ndarray) -> None:
    """Write an RGB image as PNG atomically (a reader never sees half a file)."""
    ok, buf = cv2.imencode('.png', cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'could not encode {path} as PNG')
    with atomic_open(path, 'wb') as f:
        f.write(buf.tobytes())
