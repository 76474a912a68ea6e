"""BOP object models in metres, with what models_info.json says about them (diameter, box, symmetries).

Apart from the simulator so that nodes, training and evaluation can load a model set without pybullet. The
symmetries are what ADD-S and symmetry-aware keypoint training need: `symmetry_transforms` expands them as the BOP
toolkit does (bop_toolkit_lib.misc.get_symmetry_transformations).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.distance import pdist
from scipy.spatial.transform import Rotation

_MODEL_FILE = re.compile(r'^obj_(\d+)\.ply$')


@dataclass(frozen=True)
class ContinuousSymmetry:
    """Rotation by any angle about `axis` (unit, model frame) through the point `offset_m`."""

    axis: tuple[float, float, float]
    offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ObjectModel:
    """One model of a BOP set, in metres, in the model frame BOP poses refer to.

    `symmetries_discrete` are (4, 4) model-frame transforms (translation in metres) that leave the object looking
    the same; the identity is implied. `box_min_m` / `box_size_m` are the axis-aligned model box (from
    models_info.json, else the mesh bounds)."""

    obj_id: int
    mesh: trimesh.Trimesh  # with its vertex colours or texture
    diameter_m: float
    hull: trimesh.Trimesh  # convex hull: the collision shape
    symmetries_discrete: tuple[np.ndarray, ...] = ()
    symmetries_continuous: tuple[ContinuousSymmetry, ...] = ()
    box_min_m: np.ndarray | None = None
    box_size_m: np.ndarray | None = None

    def __post_init__(self) -> None:
        discrete = tuple(_readonly(np.asarray(T, dtype=float)) for T in self.symmetries_discrete)
        for T in discrete:
            if T.shape != (4, 4) or not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
                raise ValueError(f'{self.name}: a discrete symmetry must be a homogeneous (4, 4) transform, got {T}')
        object.__setattr__(self, 'symmetries_discrete', discrete)
        object.__setattr__(self, 'symmetries_continuous', tuple(self.symmetries_continuous))
        lo, hi = self.mesh.bounds
        box_min = lo if self.box_min_m is None else self.box_min_m
        box_size = hi - lo if self.box_size_m is None else self.box_size_m
        object.__setattr__(self, 'box_min_m', _readonly(np.asarray(box_min, dtype=float).reshape(3)))
        object.__setattr__(self, 'box_size_m', _readonly(np.asarray(box_size, dtype=float).reshape(3)))

    @property
    def name(self) -> str:
        return f'obj_{self.obj_id:06d}'

    @property
    def symmetric(self) -> bool:
        """Whether the object has any symmetry (so poses are scored by ADD-S, not ADD)."""
        return bool(self.symmetries_discrete or self.symmetries_continuous)

    def symmetry_transforms(self, continuous_steps: int = 36) -> np.ndarray:
        """(S, 4, 4) model-frame transforms, in metres, under which the object looks the same, identity first: the
        discrete symmetries (with the identity), each composed with every one of `continuous_steps` rotations evenly
        spaced about each continuous axis (angle 0 included), as the BOP toolkit expands them."""
        if continuous_steps < 1:
            raise ValueError(f'continuous_steps must be >= 1, got {continuous_steps}')
        discrete = [np.eye(4), *self.symmetries_discrete]
        continuous = []
        for sym in self.symmetries_continuous:
            axis = np.asarray(sym.axis, dtype=float)
            offset = np.asarray(sym.offset_m, dtype=float)
            angles = 2.0 * np.pi * np.arange(continuous_steps) / continuous_steps
            for R in Rotation.from_rotvec(angles[:, None] * axis / np.linalg.norm(axis)).as_matrix():
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, offset - R @ offset
                continuous.append(T)
        if not continuous:
            return np.stack(discrete)
        return np.stack([C @ D for D in discrete for C in continuous])


def load_bop_models(folder: str | os.PathLike, obj_ids=None) -> dict[int, ObjectModel]:
    """The obj_XXXXXX.ply models of a BOP model folder (mm) as ObjectModels (m), by obj_id. Diameters, boxes and
    symmetries come from its models_info.json where present (diameter and box else from the mesh, no symmetry).
    `obj_ids` picks a subset."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'no model folder {folder}')
    files = {int(m.group(1)): folder / name for name in sorted(os.listdir(folder)) if (m := _MODEL_FILE.match(name))}
    if not files:
        raise FileNotFoundError(f'no obj_XXXXXX.ply models in {folder}')
    info_path = folder / 'models_info.json'
    info = json.loads(info_path.read_text(encoding='utf-8')) if info_path.is_file() else {}
    if obj_ids is not None:
        missing = sorted(set(obj_ids) - set(files))
        if missing:
            raise ValueError(f'objects {missing} not in {folder} (it has {sorted(files)})')
        files = {k: files[k] for k in sorted(set(obj_ids))}
    models = {}
    for obj_id, path in files.items():
        mesh = trimesh.load(path, process=False)  # PLY TextureFile comments are resolved beside the file
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise ValueError(f'{path}: not a triangle mesh')
        mesh.apply_scale(0.001)
        hull = mesh.convex_hull
        try:
            models[obj_id] = _model(obj_id, mesh, hull, info.get(str(obj_id), {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f'{info_path}: bad entry for object {obj_id}: {e!r}') from e
    return models


def _model(obj_id: int, mesh: trimesh.Trimesh, hull: trimesh.Trimesh, entry: dict) -> ObjectModel:
    """An ObjectModel from its mesh (m) and its models_info.json entry (mm)."""
    diameter = float(entry['diameter']) / 1000.0 if 'diameter' in entry else _diameter(hull.vertices)
    discrete = []
    for values in entry.get('symmetries_discrete', []):
        T = np.array(values, dtype=float).reshape(4, 4)
        T[:3, 3] /= 1000.0
        discrete.append(T)
    continuous = [ContinuousSymmetry(tuple(float(v) for v in sym['axis']),
                                     tuple(float(v) / 1000.0 for v in sym['offset']))
                  for sym in entry.get('symmetries_continuous', [])]
    box_min = box_size = None  # the mesh bounds
    if all(f'{k}_{a}' in entry for k in ('min', 'size') for a in 'xyz'):
        box_min = np.array([entry[f'min_{a}'] for a in 'xyz'], dtype=float) / 1000.0
        box_size = np.array([entry[f'size_{a}'] for a in 'xyz'], dtype=float) / 1000.0
    return ObjectModel(obj_id, mesh, diameter, hull, tuple(discrete), tuple(continuous), box_min, box_size)


def _diameter(points: np.ndarray) -> float:
    return float(pdist(points).max()) if len(points) > 1 else 0.0


def _readonly(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.flags.writeable = False
    return array
