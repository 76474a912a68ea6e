"""kp_pose_msgs/KeypointArray <-> arrays, matching keypoints by name so producers and consumers never depend on
each other's ordering."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from geometry_msgs.msg import Point

from kp_pose_msgs.msg import Keypoint2D, Keypoint3D, KeypointInstance


def _by_name(keypoints, names: Sequence[str], width: int, coords) -> tuple[np.ndarray, np.ndarray]:
    by_name = {k.name: k for k in keypoints}
    values = np.full((len(names), width), np.nan)
    scores = np.zeros(len(names))
    for i, name in enumerate(names):
        k = by_name.get(name)
        if k is not None:
            values[i] = coords(k)
            scores[i] = k.score
    return values, scores


def instance_2d(inst: KeypointInstance, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) pixels and (N,) scores in the order of `names`; keypoints the instance lacks are NaN with score 0."""
    return _by_name(inst.keypoints_2d, names, 2, lambda k: (k.x, k.y))


def instance_3d(inst: KeypointInstance, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points and (N,) scores in the order of `names`; missing ones NaN with score 0."""
    return _by_name(inst.keypoints_3d, names, 3, lambda k: (k.position.x, k.position.y, k.position.z))


def keypoints_2d(names: Sequence[str], px: np.ndarray, scores: np.ndarray) -> list[Keypoint2D]:
    return [Keypoint2D(name=n, x=float(p[0]) if np.isfinite(p[0]) else 0.0, y=float(p[1]) if np.isfinite(p[1]) else 0.0,
                       score=float(s) if np.all(np.isfinite(p)) else 0.0) for n, p, s in zip(names, px, scores)]


def keypoints_3d(names: Sequence[str], pts: np.ndarray, scores: np.ndarray) -> list[Keypoint3D]:
    return [Keypoint3D(name=n, position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])), score=float(s))
            for n, p, s in zip(names, pts, scores) if np.all(np.isfinite(p))]


def object_keypoint_names(count: int) -> list[str]:
    """Names of a rigid object's keypoints in messages: kp0 .. kp<count-1>, row k of its 3D keypoints."""
    return [f'kp{k}' for k in range(count)]
