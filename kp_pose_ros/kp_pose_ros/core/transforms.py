"""Rigid transforms as 4x4 homogeneous matrices and quaternions in ROS order (x, y, z, w).

Every public function validates its input so that a malformed pose fails here with a message naming the argument,
instead of producing a subtly wrong pose further down a pipeline.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# tf2 refuses quaternions whose squared norm is further than this from 1 (buffer_core.cpp); we do the same
# rather than silently normalising a quaternion that was probably built wrongly.
QUATERNION_NORM_TOLERANCE = 1e-2
# Loose enough for rotations that went through float32 (message fields, ONNX outputs), tight enough to catch
# a matrix that is not a rotation at all.
ROTATION_TOLERANCE = 1e-4


def _finite_array(value, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f'{name} must have shape {shape}, got {arr.shape}')
    if not np.all(np.isfinite(arr)):
        raise ValueError(f'{name} contains NaN or infinite values: {arr.tolist()}')
    return arr


def as_rotation(R, name: str = 'R') -> np.ndarray:
    """R as a float64 (3, 3) array, checked to be a proper rotation (orthonormal, det +1)."""
    arr = _finite_array(R, (3, 3), name)
    if not np.allclose(arr.T @ arr, np.eye(3), atol=ROTATION_TOLERANCE) or np.linalg.det(arr) < 0:
        raise ValueError(f'{name} is not a rotation matrix (orthonormal with determinant +1): {arr.tolist()}')
    return arr


def as_transform(T, name: str = 'T') -> np.ndarray:
    """T as a float64 (4, 4) array, checked to be rigid: rotation block and bottom row [0, 0, 0, 1]."""
    arr = _finite_array(T, (4, 4), name)
    if not np.array_equal(arr[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f'{name} is not homogeneous: bottom row must be [0, 0, 0, 1], got {arr[3].tolist()}')
    as_rotation(arr[:3, :3], f'rotation block of {name}')
    return arr


def make_transform(R, t) -> np.ndarray:
    """4x4 transform from a rotation matrix (3, 3) and a translation (3,)."""
    T = np.eye(4)
    T[:3, :3] = as_rotation(R)
    T[:3, 3] = _finite_array(t, (3,), 't')
    return T


def invert_transform(T) -> np.ndarray:
    """Inverse of a rigid transform, using R^T instead of a general matrix inverse (exact and cheaper)."""
    T = as_transform(T)
    R_inv = T[:3, :3].T
    out = np.eye(4)
    out[:3, :3] = R_inv
    out[:3, 3] = -R_inv @ T[:3, 3]
    return out


def quat_xyzw_to_matrix(q) -> np.ndarray:
    """Rotation matrix of a unit quaternion (x, y, z, w); refuses quaternions that are far from unit length."""
    q = _finite_array(q, (4,), 'quaternion (x, y, z, w)')
    norm_sq = float(q @ q)
    if abs(norm_sq - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise ValueError(f'quaternion (x, y, z, w) {q.tolist()} is not normalised (squared norm {norm_sq:.6g})')
    return Rotation.from_quat(q / np.sqrt(norm_sq)).as_matrix()


def matrix_to_quat_xyzw(R) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix, in the canonical sign.

    q and -q are the same rotation; picking w > 0 (and, for 180-degree rotations where w == 0, the first non-zero
    of x, y, z positive) makes the output deterministic so poses can be compared and logged reproducibly.
    """
    q = Rotation.from_matrix(as_rotation(R)).as_quat()
    q /= np.linalg.norm(q)
    if abs(q[3]) < 1e-9:  # numerical noise around a 180-degree rotation: w is zero
        q[3] = 0.0
    ordered = q[[3, 0, 1, 2]]
    leading = ordered[np.flatnonzero(np.abs(ordered) > 1e-9)[0]]
    return q if leading > 0 else -q


def transform_points(T, pts) -> np.ndarray:
    """Points (N, 3) mapped by T. Rows holding NaN (missing keypoints) stay NaN; infinities are refused."""
    T = as_transform(T)
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f'points must have shape (N, 3), got {pts.shape}')
    if np.any(np.isinf(pts)):
        raise ValueError('points contain infinite values')
    return pts @ T[:3, :3].T + T[:3, 3]


def _rotation_block(M, name: str) -> np.ndarray:
    shape = np.shape(M)
    if shape == (4, 4):
        return as_transform(M, name)[:3, :3]
    if shape == (3, 3):
        return as_rotation(M, name)
    raise ValueError(f'{name} must be a (3, 3) rotation or a (4, 4) transform, got shape {shape}')


def rotation_error_deg(Ra, Rb) -> float:
    """Geodesic angle in degrees between two rotations, given as (3, 3) rotations or (4, 4) transforms."""
    Ra, Rb = _rotation_block(Ra, 'Ra'), _rotation_block(Rb, 'Rb')
    return float(np.degrees(Rotation.from_matrix(Ra.T @ Rb).magnitude()))


def translation_error(Ta, Tb) -> float:
    """Euclidean distance between the translations of two (4, 4) transforms (in their unit, metres in ROS)."""
    return float(np.linalg.norm(as_transform(Ta, 'Ta')[:3, 3] - as_transform(Tb, 'Tb')[:3, 3]))


def interpolate_transform(Ta, Tb, fraction: float) -> np.ndarray:
    """Pose a fraction of the way from Ta to Tb: linear in translation, slerp in rotation (as tf2 interpolates)."""
    Ta, Tb = as_transform(Ta, 'Ta'), as_transform(Tb, 'Tb')
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f'fraction must lie in [0, 1], got {fraction}')
    relative = Rotation.from_matrix(Ta[:3, :3].T @ Tb[:3, :3]).as_rotvec()
    out = np.eye(4)
    out[:3, :3] = Ta[:3, :3] @ Rotation.from_rotvec(fraction * relative).as_matrix()
    out[:3, 3] = (1.0 - fraction) * Ta[:3, 3] + fraction * Tb[:3, 3]
    return out
