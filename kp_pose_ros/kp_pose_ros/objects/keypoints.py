"""The 3D keypoints of each object that the heatmap network finds in crops and PnP fits a pose to.

Two kinds: 'fps' (farthest-point sampling on the surface, as PVNet: points spread over the object, on it, so they are
seen where the object is) and 'box' (the model box's 8 corners and its centre, as BB8: the same for any mesh, but
off the surface). The set is saved as YAML beside the trained ONNX model: the network's channel k of an object is
its row k, so a model is only usable with the file it was trained with.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
import yaml

from kp_pose_ros.core.atomic_file import atomic_open
from kp_pose_ros.objects.models import ObjectModel

KINDS = ('fps', 'box')


def farthest_point_keypoints(mesh: trimesh.Trimesh, count: int = 8, seed: int = 0, samples: int = 5000) -> np.ndarray:
    """(count, 3) points of the mesh surface, spread by farthest-point sampling over `samples` surface points drawn
    with `seed`, starting from the one farthest from their centroid. Deterministic for a mesh, count, seed, samples."""
    if count < 1 or samples < count:
        raise ValueError(f'need 1 <= count <= samples, got count={count}, samples={samples}')
    points, _ = trimesh.sample.sample_surface(mesh, samples, seed=np.random.default_rng(seed))
    return farthest_point_sampling(np.asarray(points, dtype=float), count)


def farthest_point_sampling(points: np.ndarray, count: int) -> np.ndarray:
    """(count, 3) of the (N, 3) points spread by farthest-point sampling, starting from the one farthest from their
    centroid."""
    chosen = [int(np.argmax(np.linalg.norm(points - points.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(count - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return points[chosen]


def box_corner_keypoints(mesh: trimesh.Trimesh) -> np.ndarray:
    """(9, 3): the 8 corners of the mesh's axis-aligned box (trimesh.bounds.corners order) and its centre."""
    bounds = np.asarray(mesh.bounds, dtype=float)
    return np.vstack([trimesh.bounds.corners(bounds), bounds.mean(axis=0)])


@dataclass(frozen=True)
class ObjectKeypoints:
    """The keypoints of a set of objects: `points[obj_id]` is (K, 3) in the model frame, metres; `kind` says how
    they were chosen ('fps' or 'box')."""

    kind: str
    points: dict[int, np.ndarray]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'keypoint kind must be one of {KINDS}, got {self.kind!r}')
        points = {}
        for obj_id, p in sorted(self.points.items()):
            p = np.array(p, dtype=float)
            if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0 or not np.all(np.isfinite(p)):
                raise ValueError(f'keypoints of object {obj_id} must be a finite (K, 3) array, got {p.tolist()}')
            p.flags.writeable = False
            points[int(obj_id)] = p
        object.__setattr__(self, 'points', points)

    @classmethod
    def for_models(cls, models: dict[int, ObjectModel], kind: str = 'fps', count: int = 8,
                   seed: int = 0) -> ObjectKeypoints:
        """Keypoints of each model: `count` farthest points sampled with `seed` ('fps'), or the 9 box points ('box',
        which ignores count and seed)."""
        if kind == 'fps':
            return cls(kind, {k: farthest_point_keypoints(m.mesh, count, seed) for k, m in models.items()})
        if kind == 'box':
            return cls(kind, {k: box_corner_keypoints(m.mesh) for k, m in models.items()})
        raise ValueError(f'keypoint kind must be one of {KINDS}, got {kind!r}')

    def save(self, path: str | os.PathLike) -> None:
        """Write as YAML: the kind and, per object, its obj_id, BOP name and points (m, 6 decimals)."""
        objects = [{'obj_id': obj_id, 'name': f'obj_{obj_id:06d}',
                    'points': [[round(float(v), 6) for v in row] for row in p]} for obj_id, p in self.points.items()]
        with atomic_open(path) as f:
            f.write('# 3D keypoints per object, model frame, metres (kp_pose_ros.objects.keypoints)\n')
            yaml.safe_dump({'kind': self.kind, 'units': 'm', 'objects': objects}, f, sort_keys=False,
                           default_flow_style=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ObjectKeypoints:
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
        try:
            if data.get('units', 'm') != 'm':
                raise ValueError(f"units must be 'm', got {data['units']!r}")
            obj_ids = [int(o['obj_id']) for o in data['objects']]
            if len(set(obj_ids)) != len(obj_ids):
                raise ValueError(f'an object is listed twice: {obj_ids}')
            return cls(data['kind'], {k: np.array(o['points'], dtype=float) for k, o in zip(obj_ids, data['objects'])})
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f'{path}: not an object keypoints file: {e!r}') from e
