"""How well robot_calib calibrates, measured by running RobotCalibEstimator (what the pose fitting node runs) over
static-camera sequences with ground truth: per-frame ADD of the keypoints and AUC@0.1 m (DREAM / RoboKeyGen), failed
frames, the calibration aggregated from each sequence (robot/calibration.py, as the calibration manager does) against
the true camera pose with the uncertainty it reported, and the time per stage.

One code path for the benchmark (sequences rendered on the fly) and `kp-pose eval robot_calib --dataset DIR` (any
folder in the robot layout of sim/dataset.py: a user's own recorded cell with a reference calibration included).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.metrics import add_auc
from kp_pose_ros.core.transforms import rotation_error_deg
from kp_pose_ros.robot.calibration import (
    SYSTEMATIC_ROTATION_DEG,
    SYSTEMATIC_TRANSLATION_M,
    CalibrationError,
    CalibrationSample,
    aggregate,
)
from kp_pose_ros.robot.estimator import EstimatorConfig, Observation, RobotCalibEstimator
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS

# The calibration manager's default: fewer estimates give no calibration.
MIN_SAMPLES = 10


@dataclass(frozen=True, eq=False)
class TruthFrame:
    """One frame to estimate and its ground truth: the camera optical frame in the base frame, the keypoints in the
    camera frame (N, 3) for ADD, and the true joints (scored where the estimator regressed them)."""

    observation: Observation
    T_base_cam: np.ndarray
    keypoints_cam: np.ndarray
    joints: np.ndarray | None = None


def run_sequence(estimator: RobotCalibEstimator, frames: Iterable[TruthFrame], min_samples: int = MIN_SAMPLES) -> dict:
    """One static-camera sequence from a fresh estimator state: per-frame ADD (inf: no pose), stage times, and the
    aggregated calibration's error against the first frame's truth."""
    estimator.reset()
    add, samples, stage_ms, T_true, joint_error = [], [], {}, None, []
    for index, frame in enumerate(frames):
        T_true = frame.T_base_cam if T_true is None else T_true
        started = time.perf_counter()
        result = estimator.estimate(frame.observation)
        stage_ms.setdefault('estimate', []).append((time.perf_counter() - started) * 1e3)
        for name, ms in result.stage_ms.items():
            if name != 'total':
                stage_ms.setdefault(name, []).append(ms)
        if not result.success:
            add.append(math.inf)
            continue
        estimate = result.estimate
        add.append(float(np.mean(np.linalg.norm(estimate.keypoints_cam - frame.keypoints_cam, axis=1))))
        if frame.joints is not None and not estimate.known_joints:
            joint_error.append(np.degrees(np.abs(estimate.joints - frame.joints)))
        samples.append(CalibrationSample(index, estimate.T_base_cam, weight=max(1, int(estimate.inliers.sum())),
                                         joint_positions=estimate.joints))
    out = {'frames': len(add), 'add_m': add, 'stage_ms': stage_ms, 'joint_error_deg': joint_error}
    try:
        # As the calibration manager aggregates by default.
        result = aggregate(samples, min_samples=min_samples, systematic_translation_m=SYSTEMATIC_TRANSLATION_M,
                           systematic_rotation_deg=SYSTEMATIC_ROTATION_DEG)
    except CalibrationError as exc:
        out['calibration'] = {'error': str(exc)}
        return out
    error_t = float(np.linalg.norm(result.T_base_cam[:3, 3] - T_true[:3, 3]))
    error_r = float(rotation_error_deg(result.T_base_cam[:3, :3], T_true[:3, :3]))
    bound_t, bound_r = result.translation_uncertainty_m, result.rotation_uncertainty_deg
    out['calibration'] = {
        'error_m': error_t, 'error_deg': error_r, 'samples': result.num_samples, 'inliers': result.num_inliers,
        'uncertainty_m': bound_t, 'uncertainty_deg': bound_r,
        'covered': bool(error_t <= bound_t and error_r <= bound_r)}
    return out


def summarise(sequences: list[dict]) -> dict:
    """Figures over sequences: AUC@0.1 m, ADD median/mean, failures, calibration error per sequence, stage times
    (median, p95)."""
    add = np.array([a for s in sequences for a in s['add_m']], dtype=float)
    finite = add[np.isfinite(add)]
    calibrations = [s['calibration'] for s in sequences]
    stage = {}
    for name in sorted({k for s in sequences for k in s['stage_ms']}):
        values = np.array([v for s in sequences for v in s['stage_ms'].get(name, [])])
        stage[name] = {'median': round(float(np.median(values)), 2),
                       'p95': round(float(np.percentile(values, 95)), 2)}
    joint_error = [e for s in sequences for e in s['joint_error_deg']]
    return {
        'frames': int(add.size), 'failures': int((~np.isfinite(add)).sum()),
        'auc_0.1m': round(add_auc(add), 2),
        'add_median_m': float(np.median(add)) if add.size else math.nan,
        'add_mean_m': float(finite.mean()) if finite.size else math.nan,
        'joint_error_deg_mean': float(np.mean(joint_error)) if joint_error else None,
        'joint_error_deg_per_joint': np.mean(joint_error, axis=0).round(2).tolist() if joint_error else None,
        'calibrations': calibrations,
        'failed_sequences': sum('error' in c for c in calibrations),
        'calibration_error_cm': [round(c['error_m'] * 100, 2) if 'error_m' in c else None for c in calibrations],
        'calibration_error_deg': [round(c['error_deg'], 3) if 'error_deg' in c else None for c in calibrations],
        'stage_ms': stage,
    }


def robot_estimator(config: EstimatorConfig, urdf_path: str | None = None, base_link: str = 'panda_link0',
                    keypoint_links: tuple[str, ...] = PANDA_KEYPOINT_LINKS, regressor=None, lifter=None,
                    surface_points: int = 3000) -> RobotCalibEstimator:
    """An estimator for a robot URDF (default: pybullet's Panda, the sim's robot) with its depth fitter, built
    the way the node builds them."""
    import pybullet_data

    from kp_pose_ros.robot.depth_fit import RobotDepthFitter
    from kp_pose_ros.robot.kinematics import RobotKinematics
    from kp_pose_ros.robot.surface import sample_robot_surface
    from kp_pose_ros.robot.urdf import parse_urdf

    urdf_path = urdf_path or str(Path(pybullet_data.getDataPath()) / 'franka_panda' / 'panda.urdf')
    text = Path(urdf_path).read_text(encoding='utf-8')
    kinematics = RobotKinematics(parse_urdf(text), base_link, keypoint_links)
    fitter = None
    if config.depth_alignment:
        surface = sample_robot_surface(text, kinematics.link_names, str(Path(urdf_path).parent),
                                       num_points=surface_points)
        fitter = RobotDepthFitter(surface, kinematics)
    return RobotCalibEstimator(kinematics, config, regressor, fitter, lifter)


# ------------------------------------------------------------------ datasets in the robot layout
def dataset_sequences(dataset_dir: str | Path, detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None,
                      use_depth: bool = True, use_joints: bool = True) -> Iterator[tuple[int, list[TruthFrame]]]:
    """(camera_index, frames) per static-camera sequence of a robot-layout dataset, in file order. ``detect`` gives
    (pixels, confidences) from an RGB image (None: the annotated keypoints, visible ones only, as a perfect
    detector); the depth and measured joints are offered as the flags say."""
    from kp_pose_ros.sim.dataset import load_annotations, load_frame, load_meta

    root = Path(dataset_dir)
    meta = load_meta(root)
    cam = meta['camera']
    by_camera: dict[int, list[dict]] = {}
    for annotation in load_annotations(root):
        by_camera.setdefault(int(annotation.get('camera_index', annotation['index'])), []).append(annotation)
    for camera_index, records in by_camera.items():
        frames = []
        for a in records:
            camera = CameraModel(cam['width'], cam['height'], a['K'], cam.get('D', ()),
                                 cam.get('distortion_model', 'plumb_bob'))
            rgb, depth, _ = load_frame(root, a)
            if detect is None:
                pixels = np.where(a['visible'][:, None], a['keypoints_px'], np.nan)
                confidences = a['visible'].astype(float)
            else:
                pixels, confidences = detect(rgb)
            frames.append(TruthFrame(Observation(camera, pixels, confidences,
                                                 joints=a['joint_positions'] if use_joints else None,
                                                 depth_m=depth if use_depth else None),
                                     a['T_base_cam'], a['keypoints_cam'], a['joint_positions']))
        yield camera_index, frames


def report(name: str, summary: dict) -> str:
    lines = [f"{name}: {summary['frames']} frames, {summary['failures']} failed; AUC@0.1m {summary['auc_0.1m']:.1f}, "
             f"ADD median {summary['add_median_m'] * 100:.2f} cm, mean {summary['add_mean_m'] * 100:.2f} cm"]
    for index, c in enumerate(summary['calibrations']):
        if 'error' in c:
            lines.append(f'  sequence {index}: no calibration ({c["error"]})')
        else:
            lines.append(f"  sequence {index}: calibration error {c['error_m'] * 1000:.1f} mm / "
                         f"{c['error_deg']:.2f} deg from {c['samples']} estimates; reported uncertainty "
                         f"{c['uncertainty_m'] * 1000:.1f} mm / {c['uncertainty_deg']:.2f} deg "
                         f"({'covers' if c['covered'] else 'does NOT cover'} the error)")
    lines.append('  time per frame (ms, median / p95): ' + ', '.join(
        f"{k} {v['median']:.1f} / {v['p95']:.1f}" for k, v in summary['stage_ms'].items()))
    return '\n'.join(lines)
