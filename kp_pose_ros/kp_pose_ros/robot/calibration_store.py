"""Named camera calibrations as YAML files, written so that a crash never leaves a half-written file.

Schema ``kp_pose_ros/calibration/v1`` (one file ``<name>.yaml`` per calibration)::

    format: kp_pose_ros/calibration/v1
    name: lab_bench                      # letters, digits, '-' and '_'
    created: '2025-01-31T12:00:00+00:00' # ISO 8601, UTC
    tool: kp_pose_ros 0.1.0
    method: ...                          # how the transform was estimated
    parent_frame: panda_link0            # the transform is parent -> child: the child's pose in the parent
    child_frame: camera_link
    transform:                           # the same layout as geometry_msgs/Transform and easy_handeye2's `transform`
      translation: {x: .., y: .., z: ..}  # metres
      rotation: {x: .., y: .., z: .., w: ..}  # unit quaternion, ROS order; authoritative
    rpy_deg: {roll: .., pitch: .., yaw: ..}  # the same rotation for humans (fixed axes X, Y, Z as ROS RPY);
                                             # load refuses a file where it disagrees with the quaternion
    uncertainty:                         # only when saved with the aggregate it came from
      num_samples, num_inliers, effective_samples,
      translation_std_m: {x, y, z, norm}, translation_stderr_m,
      rotation_std_deg: {x, y, z, norm}, rotation_stderr_deg,
      translation_threshold_m, rotation_threshold_deg,
      mean_residual_px, keypoint_mean_residual_px: {name: px}  # null = never observed / unknown
      num_configurations, effective_configurations,  # distinct arm configurations (views) among the inliers
      translation_uncertainty_m, rotation_uncertainty_deg,  # ~95 % bounds, view bias included; null = unbounded
      translation_view_std_m, rotation_view_std_deg  # how far one view's estimate typically is; null = unknown
    metadata: {...}                      # free-form, plain YAML values

Files written before the configuration fields existed load as they are; their bounds read as unknown.

The uncertainty describes the aggregate of the camera's optical-frame pose; composing it with the driver's static
optical transform (a rigid offset of a few centimetres) changes it negligibly. easy_handeye2's own loader also needs
its `parameters` block (effector and marker frames that a markerless calibration does not have), so these files are
not loadable there; the `transform` block reads the same.
"""
from __future__ import annotations

import datetime
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.atomic_file import atomic_open
from kp_pose_ros.core.transform_tree import check_frame_id
from kp_pose_ros.core.transforms import (
    as_transform,
    make_transform,
    matrix_to_quat_xyzw,
    quat_xyzw_to_matrix,
    rotation_error_deg,
)
from kp_pose_ros.robot.calibration import CalibrationResult

FORMAT = 'kp_pose_ros/calibration/v1'
SUFFIX = '.yaml'
DEFAULT_METHOD = 'markerless robot keypoints, robust aggregate of per-frame poses'
_NAME = re.compile(r'[A-Za-z0-9_-]{1,100}')
# rpy_deg is written from the quaternion at full float precision (Euler angles lose a few digits near pitch +-90 deg);
# a larger disagreement means someone edited it.
_RPY_TOLERANCE_DEG = 1e-4


class CalibrationFileError(ValueError):
    """A calibration file that exists but cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, eq=False)
class StoredCalibration:
    """A loaded calibration: ``transform`` is T_parent_child (the child's pose in the parent frame).

    ``uncertainty`` is the file's uncertainty block as plain values (see the module docstring), None when the file
    has none.
    """

    path: Path
    name: str
    transform: np.ndarray
    parent_frame: str
    child_frame: str
    created: datetime.datetime | None
    method: str
    tool: str
    uncertainty: dict | None
    metadata: dict


def validate_name(name: str) -> str:
    """The name itself, if it is safe as a file name on every system and in a ROS parameter; else ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"calibration name {name!r} is invalid: use 1-100 letters, digits, '-' or '_' "
                         '(no spaces, dots or slashes)')
    return name


def calibration_path(directory: str | os.PathLike, name: str) -> Path:
    return Path(directory) / f'{validate_name(name)}{SUFFIX}'


def _tool_version() -> str:
    try:
        return f'kp_pose_ros {package_metadata.version("kp_pose_ros")}'
    except package_metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return 'kp_pose_ros (version unknown)'


def _plain(value, where: str):
    """Value as plain YAML types (numpy scalars and arrays become numbers and lists; NaN becomes null)."""
    if isinstance(value, np.ndarray):
        return [_plain(v, where) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f'{where} keys must be strings, got {list(value)}')
        return {k: _plain(v, f'{where}.{k}') for k, v in value.items()}
    raise ValueError(f'{where} holds a {type(value).__name__}; only numbers, strings, booleans, None, lists and '
                     'dicts can be saved')
_Z95 = 1.959964  # two-sided 95 % quantile of a normal distribution


@dataclass(frozen=True)
class Drift:
    """How far a live aggregate is from a saved calibration, and how far it may be given both uncertainties."""

    translation_m: float
    rotation_deg: float
    translation_tolerance_m: float
    rotation_tolerance_deg: float

    @property
    def ratio(self) -> float:
        """The larger of distance / tolerance for translation and rotation: <= 1 agrees with the calibration."""
        return max(self.translation_m / self.translation_tolerance_m, self.rotation_deg / self.rotation_tolerance_deg)


def _known(uncertainty: dict | None, key: str) -> float:
    """A stored bound as a number; 0 when the file does not know it (older file, or unbounded when saved)."""
    value = (uncertainty or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _live_bound(bound: float, view_std: float, stderr: float) -> float:
    """The live aggregate's ~95 % bound; from one view (unbounded) the saved calibration's per-view spread stands
    in for the live view's unknown bias, on top of the live frames' own noise."""
    return bound if math.isfinite(bound) else _Z95 * math.hypot(view_std, 0.0 if math.isnan(stderr) else stderr)


def drift(T_saved: ArrayLike, uncertainty: dict | None, T_live: ArrayLike, live: CalibrationResult, *,
          min_translation_m: float, min_rotation_deg: float) -> Drift:
    """Distance of ``T_live`` (the live aggregate, in the saved calibration's frames) from ``T_saved``; the
    tolerance is the saved bound plus the live one, never below the minima (a calibration without stored bounds
    is judged on the live bound and the minima alone)."""
    T_saved, T_live = as_transform(T_saved, 'T_saved'), as_transform(T_live, 'T_live')
    t_tol = _known(uncertainty, 'translation_uncertainty_m') + _live_bound(
        live.translation_uncertainty_m, _known(uncertainty, 'translation_view_std_m'), live.translation_stderr_m)
    r_tol = _known(uncertainty, 'rotation_uncertainty_deg') + _live_bound(
        live.rotation_uncertainty_deg, _known(uncertainty, 'rotation_view_std_deg'), live.rotation_stderr_deg)
    return Drift(float(np.linalg.norm(T_live[:3, 3] - T_saved[:3, 3])),
                 rotation_error_deg(T_live[:3, :3], T_saved[:3, :3]),
                 max(min_translation_m, t_tol), max(min_rotation_deg, r_tol))


def uncertainty_block(result: CalibrationResult) -> dict:
    """The file's uncertainty block for ``result``, as plain values (also what drift reads)."""
    t_std, r_std = result.translation_std_xyz_m, result.rotation_std_xyz_deg
    residuals = result.keypoint_mean_residual_px
    names = result.keypoint_names or [f'keypoint_{i}' for i in range(len(residuals))]
    return _plain({
        'num_samples': result.num_samples,
        'num_inliers': result.num_inliers,
        'effective_samples': result.effective_samples,
        'translation_std_m': {'x': t_std[0], 'y': t_std[1], 'z': t_std[2], 'norm': result.translation_std_m},
        'translation_stderr_m': result.translation_stderr_m,
        'rotation_std_deg': {'x': r_std[0], 'y': r_std[1], 'z': r_std[2], 'norm': result.rotation_std_deg},
        'rotation_stderr_deg': result.rotation_stderr_deg,
        'translation_threshold_m': result.translation_threshold_m,
        'rotation_threshold_deg': result.rotation_threshold_deg,
        'mean_residual_px': result.mean_residual_px,
        'keypoint_mean_residual_px': dict(zip(names, residuals)),
        'num_configurations': result.num_configurations,
        'effective_configurations': result.effective_configurations,
        'translation_uncertainty_m': result.translation_uncertainty_m,
        'rotation_uncertainty_deg': result.rotation_uncertainty_deg,
        'translation_view_std_m': result.translation_view_std_m,
        'rotation_view_std_deg': result.rotation_view_std_deg,
    }, 'uncertainty')


def _rpy_deg(R: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # at pitch +-90 deg roll and yaw share one axis; any split is the same rotation
        warnings.simplefilter('ignore', UserWarning)
        return Rotation.from_matrix(R).as_euler('xyz', degrees=True)


def save_calibration(directory: str | os.PathLike, name: str, transform: ArrayLike, parent_frame: str,
                     child_frame: str, *, result: CalibrationResult | None = None, metadata: dict | None = None,
                     method: str = DEFAULT_METHOD) -> Path:
    """Save T_parent_child as ``<directory>/<name>.yaml`` (directory created, an existing file replaced whole).

    ``transform`` is what will be published (e.g. base -> camera_link from compose_root); ``result`` is the aggregate
    it was computed from, whose uncertainty is stored with it. Returns the file's path.
    """
    path = calibration_path(directory, name)
    T = as_transform(transform, 'transform')
    check_frame_id(parent_frame, 'parent_frame')
    check_frame_id(child_frame, 'child_frame')
    if parent_frame == child_frame:
        raise ValueError(f'parent_frame and child_frame are both {parent_frame!r}')
    if result is not None and not isinstance(result, CalibrationResult):
        raise TypeError(f'result must be a CalibrationResult or None, got {type(result).__name__}')
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f'metadata must be a dict or None, got {type(metadata).__name__}')
    q = matrix_to_quat_xyzw(T[:3, :3])
    roll, pitch, yaw = _rpy_deg(T[:3, :3])
    document = {
        'format': FORMAT,
        'name': name,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'tool': _tool_version(),
        'method': str(method),
        'parent_frame': parent_frame,
        'child_frame': child_frame,
        'transform': {
            'translation': dict(zip('xyz', map(float, T[:3, 3]))),
            'rotation': dict(zip('xyzw', map(float, q))),
        },
        'rpy_deg': {'roll': float(roll), 'pitch': float(pitch), 'yaw': float(yaw)},
    }
    if result is not None:
        document['uncertainty'] = uncertainty_block(result)
    document['metadata'] = _plain(metadata or {}, 'metadata')
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        yaml.safe_dump(document, f, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return path


def list_calibrations(directory: str | os.PathLike) -> list[str]:
    """Names of the calibrations saved in directory, sorted; empty when it does not exist yet."""
    directory = Path(directory)
    if not directory.exists():
        return []
    if not directory.is_dir():
        raise NotADirectoryError(f'calibration directory {directory} is not a directory')
    return sorted(p.stem for p in directory.glob(f'*{SUFFIX}') if p.is_file() and _NAME.fullmatch(p.stem))


def _field(mapping: dict, key: str, where: str, path: Path):
    if not isinstance(mapping, dict):
        raise CalibrationFileError(f'{path}: {where} must be a mapping, got {type(mapping).__name__}')
    if key not in mapping:
        raise CalibrationFileError(f'{path}: missing key {where}.{key}' if where else f'{path}: missing key {key}')
    return mapping[key]


def _numbers(mapping, keys: Sequence[str], where: str, path: Path) -> np.ndarray:
    values = [_field(mapping, k, where, path) for k in keys]
    for k, v in zip(keys, values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CalibrationFileError(f'{path}: {where}.{k} must be a finite number, got {v!r}')
    return np.array(values, dtype=np.float64)


def _created(value, path: Path) -> datetime.datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):  # YAML reads an unquoted timestamp as a datetime
        return value
    text = str(value)
    if text.endswith(('Z', 'z')):  # Python < 3.11 (Humble's 3.10) does not read the UTC designator
        text = text[:-1] + '+00:00'
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError as err:
        raise CalibrationFileError(f'{path}: created {value!r} is not an ISO 8601 date and time') from err


def load_calibration(path: str | os.PathLike, name: str | None = None) -> StoredCalibration:
    """Load ``path`` (a YAML file), or the calibration ``name`` saved in directory ``path``.

    FileNotFoundError when there is no such file; CalibrationFileError for a file that is not a valid calibration.
    A quaternion slightly off unit length (rounding, hand edits) is normalised; one far from it is refused.
    """
    file = Path(path) if name is None else calibration_path(path, name)
    if not file.is_file():
        if name is not None:
            known = ', '.join(list_calibrations(path)) if Path(path).is_dir() else ''
            raise FileNotFoundError(f'no calibration named {name!r} in {path} (saved there: {known or "none"})')
        raise FileNotFoundError(f'calibration file {file} does not exist')
    try:
        document = yaml.safe_load(file.read_text(encoding='utf-8'))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CalibrationFileError(f'{file} is not valid YAML: {err}') from err
    if not isinstance(document, dict):
        raise CalibrationFileError(f'{file} does not hold a calibration (expected a mapping at the top level)')
    version = _field(document, 'format', '', file)
    if version != FORMAT:
        raise CalibrationFileError(f'{file} has format {version!r}; this version of kp_pose_ros reads {FORMAT!r}')

    frames = []
    for key in ('parent_frame', 'child_frame'):
        frame = _field(document, key, '', file)
        try:
            check_frame_id(frame, key)
        except ValueError as err:
            raise CalibrationFileError(f'{file}: {err}') from err
        frames.append(frame)
    transform = _field(document, 'transform', '', file)
    t = _numbers(_field(transform, 'translation', 'transform', file), 'xyz', 'transform.translation', file)
    q = _numbers(_field(transform, 'rotation', 'transform', file), 'xyzw', 'transform.rotation', file)
    try:
        R = quat_xyzw_to_matrix(q)
    except ValueError as err:
        raise CalibrationFileError(f'{file}: transform.rotation: {err}') from err
    if 'rpy_deg' in document:
        rpy = _numbers(document['rpy_deg'], ('roll', 'pitch', 'yaw'), 'rpy_deg', file)
        R_rpy = Rotation.from_euler('xyz', rpy, degrees=True).as_matrix()
        if rotation_error_deg(R_rpy, R) > _RPY_TOLERANCE_DEG:
            raise CalibrationFileError(
                f'{file}: rpy_deg {rpy.tolist()} is not the rotation of the quaternion {q.tolist()} '
                f'(rpy of the quaternion: {_rpy_deg(R).tolist()}). The quaternion is what is loaded: '
                'fix or delete rpy_deg')

    uncertainty = document.get('uncertainty')
    meta = document.get('metadata', {})
    for key, value in (('uncertainty', uncertainty), ('metadata', meta)):
        if value is not None and not isinstance(value, dict):
            raise CalibrationFileError(f'{file}: {key} must be a mapping, got {type(value).__name__}')
    return StoredCalibration(
        path=file,
        name=str(document.get('name', file.stem)),
        transform=make_transform(R, t),
        parent_frame=frames[0],
        child_frame=frames[1],
        created=_created(document.get('created'), file),
        method=str(document.get('method', '')),
        tool=str(document.get('tool', '')),
        uncertainty=uncertainty,
        metadata=meta or {},
    )
