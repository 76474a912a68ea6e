"""How good the 2D robot keypoints are, and what their confidences mean, on any annotated image set.

One code path for the training manifest (held-out renders) and `kp-pose eval robot_keypoints --dataset DIR` (a
user's own annotated frames, real photographs included): RobotKeypointDetector.detect on each image, exactly what
the robot_keypoints node runs. Errors are reported in each image's own pixels and scaled to a 640-pixel-wide
reference, so cameras of different resolutions compare; "right" means within CORRECT_PX at that reference.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

REFERENCE_WIDTH = 640
CORRECT_PX = 15.0
# The suggested confidence threshold is the lowest above which this fraction of reported keypoints are right.
TARGET_RELIABILITY = 0.95
CONFIDENCE_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, np.inf)
PCK_THRESHOLDS_PX = (5, 10, 15)
# The bar a user sets on a real photograph: at least this many of the 7 keypoints right, no wrong one reported.
MIN_RIGHT_PER_FRAME = 5


def error_stats(errors: np.ndarray) -> dict:
    """Count, mean, median, p90 and PCK of a flat array of pixel errors (NaN counts as a miss in PCK)."""
    errors = np.asarray(errors, float).ravel()
    if errors.size == 0:
        return {'count': 0}
    finite = errors[np.isfinite(errors)]
    out = {'count': int(errors.size)}
    if finite.size:
        out.update({'mean_px': round(float(finite.mean()), 2), 'median_px': round(float(np.median(finite)), 2),
                    'p90_px': round(float(np.percentile(finite, 90)), 2)})
    for t in PCK_THRESHOLDS_PX:
        out[f'pck_{t}px'] = round(float(np.mean(np.nan_to_num(errors, nan=np.inf) <= t)), 4)
    return out


def confidence_reliability(confidence: np.ndarray, errors_px: np.ndarray, in_image: np.ndarray,
                           visible: np.ndarray, threshold: float | None = None) -> dict:
    """What a confidence means, measured: per confidence bin, how often a keypoint is right; and at `threshold`
    (default: the lowest one above which TARGET_RELIABILITY of reported keypoints are right) how reliable the
    reported keypoints are, what it keeps (visible keypoints reported) and what it lets through (occluded and
    out-of-image keypoints above it). Arrays are flat, one entry per keypoint and image; errors at the reference
    width."""
    confidence, errors_px = np.asarray(confidence, float).ravel(), np.asarray(errors_px, float).ravel()
    in_image, visible = np.asarray(in_image, bool).ravel(), np.asarray(visible, bool).ravel()
    right = np.nan_to_num(errors_px, nan=np.inf) <= CORRECT_PX
    bins = []
    for lo, hi in zip(CONFIDENCE_BINS[:-1], CONFIDENCE_BINS[1:]):
        sel = (confidence >= lo) & (confidence < hi)
        bins.append({'confidence': [lo, round(hi, 2) if np.isfinite(hi) else 'inf'], 'count': int(sel.sum()),
                     'right': round(float(right[sel].mean()), 4) if sel.any() else None})
    out = {'correct_px': CORRECT_PX, 'target_reliability': TARGET_RELIABILITY}
    if threshold is None:
        candidates = np.round(np.arange(0.05, 0.96, 0.01), 2)
        reliability = np.array([right[confidence >= t].mean() if np.any(confidence >= t) else 1.0
                                for t in candidates])
        meets = np.nonzero(reliability >= TARGET_RELIABILITY)[0]
        threshold = float(candidates[meets[0]]) if meets.size else float(candidates[-1])
        out['threshold_meets_target'] = bool(meets.size)
    above = confidence >= threshold
    occluded = in_image & ~visible

    def share(flags: np.ndarray, where: np.ndarray) -> float | None:
        return round(float(flags[where].mean()), 4) if where.any() else None

    out.update({
        'threshold': float(threshold),
        'reliability_above_threshold': share(right, above),
        'visible_reported': share(above, visible),
        'visible_reported_and_right': share(above & right, visible),
        'occluded_above': share(above, occluded),
        'outside_image_above': share(above, ~in_image),
        'keypoints': int(confidence.size), 'per_bin': bins,
    })
    return out


def detect_dataset(detector, dataset_dir: str | Path) -> dict:
    """Run `detector` (a RobotKeypointDetector) on every frame of a robot-layout dataset (sim.dataset; RGB is
    all it reads). Returns arrays (F, K): errors_px (own pixels), errors_ref (640-px reference), confidence,
    in_image, visible; and latency_s (F,) and the image size."""
    from kp_pose_ros.sim.dataset import load_annotations

    root = Path(dataset_dir)
    annotations = load_annotations(root)
    if not annotations:
        raise ValueError(f'{root}: no annotated frames')
    names = tuple(annotations[0]['keypoint_names'])
    if names != tuple(detector.keypoint_names):
        raise ValueError(f'{root} annotates keypoints {list(names)}, the model detects {list(detector.keypoint_names)}')
    errors, confidence, latency, widths = [], [], [], []
    for ann in annotations:
        bgr = cv2.imread(str(root / ann['rgb']), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f'cannot read {root / ann["rgb"]}')
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        pixels, conf = detector.detect(rgb)
        latency.append(time.perf_counter() - t0)
        errors.append(np.linalg.norm(pixels - ann['keypoints_px'], axis=1))
        confidence.append(conf)
        widths.append(rgb.shape[1])
    errors = np.array(errors)
    return {'errors_px': errors, 'errors_ref': errors * (REFERENCE_WIDTH / np.array(widths, float))[:, None],
            'confidence': np.array(confidence), 'in_image': np.array([a['in_image'] for a in annotations]),
            'visible': np.array([a['visible'] for a in annotations]), 'latency_s': np.array(latency),
            'image_size': [int(rgb.shape[1]), int(rgb.shape[0])], 'keypoint_names': names}


def summarise(result: dict, threshold: float | None = None) -> dict:
    """The figures a user asks of a keypoint model on a dataset (see module docstring), from detect_dataset."""
    errors, confidence = result['errors_ref'], result['confidence']
    visible, in_image = result['visible'], result['in_image']
    right = np.nan_to_num(errors, nan=np.inf) <= CORRECT_PX
    reliability = confidence_reliability(confidence, errors, in_image, visible, threshold)
    wrong_above = ~right & (confidence >= reliability['threshold'])
    return {
        'frames': int(len(errors)), 'image_size': result.get('image_size'),  # absent for pooled datasets
        'visible_at_640px_width': error_stats(errors[visible]),
        'in_image_occluded_at_640px_width': error_stats(errors[in_image & ~visible]),
        'per_keypoint_at_640px_width': {n: error_stats(errors[visible[:, k], k])
                                        for k, n in enumerate(result['keypoint_names'])},
        'per_frame': {
            'right_keypoints_mean': round(float(right.sum(axis=1).mean()), 2),
            f'frames_with_at_least_{MIN_RIGHT_PER_FRAME}_right': round(float(np.mean(right.sum(axis=1)
                                                                                     >= MIN_RIGHT_PER_FRAME)), 4),
            'frames_with_no_wrong_keypoint_above_threshold': round(float(np.mean(~wrong_above.any(axis=1))), 4),
            'wrong_keypoints_above_threshold_mean': round(float(wrong_above.sum(axis=1).mean()), 3),
        },
        'confidence': reliability,
        'latency_ms': {'median': round(1000 * float(np.median(result['latency_s'])), 1),
                       'p95': round(1000 * float(np.percentile(result['latency_s'], 95)), 1)},
    }


def report(name: str, summary: dict) -> str:
    """A few lines for the terminal."""
    vis, conf, frame = summary['visible_at_640px_width'], summary['confidence'], summary['per_frame']
    w, h = summary['image_size']
    enough = frame[f'frames_with_at_least_{MIN_RIGHT_PER_FRAME}_right']
    return '\n'.join([
        f"{name}: {summary['frames']} frames {w}x{h}; errors at a 640-px-wide reference",
        f"  keypoints in view: median {vis.get('median_px', float('nan')):.1f} px, PCK@15 {vis.get('pck_15px', 0):.3f}",
        f"  per frame: {frame['right_keypoints_mean']:.2f} of {len(summary['per_keypoint_at_640px_width'])} right "
        f"on average; >= {MIN_RIGHT_PER_FRAME} right in {enough:.1%} of frames",
        f"  confidence threshold {conf['threshold']:.2f}: {conf['reliability_above_threshold']} of reported keypoints "
        f"right; frames with no wrong keypoint above it {frame['frames_with_no_wrong_keypoint_above_threshold']:.1%}",
    ])
