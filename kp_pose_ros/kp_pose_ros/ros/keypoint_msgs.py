"""kp_pose_msgs/KeypointArray <-> arrays, matching keypoints by name so producers and consumers never depend on
each other's ordering."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from geometry_msgs.msg import Point
from kp_pose_msgs.msg import Keypoint2D, Keypoint3D, KeypointInstance


def instance_2d(inst: KeypointInstance, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) pixels and (N,) scores in the order of `names`; keypoints the instance lacks are NaN with score 0."""
    by_name = {k.name: k for k in inst.keypoints_2d}
    px = np.full((len(names), 2), np.nan)
    score = np.zeros(len(names))
    for i, name in enumerate(names):
        k = by_name.get(name)
        if k is not None:
            px[i] = (k.x, k.y)
            score[i] = k.score
    return px, score


def instance_3d(inst: KeypointInstance, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points and (N,) scores in the order of `names`; missing ones NaN with score 0."""
    by_name = {k.name: k for k in inst.keypoints_3d}
    pts = np.full((len(names), 3), np.nan)
    score = np.zeros(len(names))
    for i, name in enumerate(names):
        k = by_name.get(name)
        if k is not None:
            pts[i] = (k.position.x, k.position.y, k.position.z)
            score[i] = k.score
    return pts, score


def keypoints_2d(names: Sequence[str], px: np.ndarray, scores: np.ndarray) -> list[Keypoint2D]:
    return [Keypoint2D(name=n, x=float(p[0]) if np.isfinite(p[0]) else 0.0, y=float(p[1]) if np.isfinite(p[1]) else 0.0,
                       score=float(s) if np.all(np.isfinite(p)) else 0.0) for n, p, s in zip(names, px, scores)]


def keypoints_3d(names: Sequence[str], pts: np.ndarray, scores: np.ndarray) -> list[Keypoint3D]:
    return [Keypoint3D(name=n, position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])), score=float(s))
            for n, p, s in zip(names, pts, scores) if np.all(np.isfinite(p))]
