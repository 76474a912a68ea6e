"""`make demo-objects` / `kp-pose demo objects`: known-object poses on the synthetic camera, scored against its truth.

Runs the object_pose graph with camera:=sim in this process (table-top layouts of the LINEMOD models, a new camera
pose every frame), pairs each frame's detections_3d with the camera's /sim/objects by stamp and prints, per object:
how often it was seen (instances at least --min-visible visible, in frames the pipeline processed), the detection
rate, the median translation and rotation errors (symmetric objects: to the closest of the poses that look the
same), the median ADD(-S) and the ADD(-S) accuracy at 10 % of the diameter (a missed instance counts as a failure, as
in BOP); then the graph's output rate and latency (image stamp to detections_3d).

An estimate detects an instance of its class whose origin lies within one object diameter of its own, one to one by
minimum total distance: a pose that far off is a false detection, not a bad pose of that instance."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from kp_pose_ros.core.transforms import rotation_error_deg, translation_error
from kp_pose_ros.objects.metrics import add_accuracy, pose_error
from kp_pose_ros.objects.models import ObjectModel
from kp_pose_ros.objects.pose import canonical_rotation

NS = '/object_pose'
ADD_FRACTION = 0.1
# Continuous symmetries sampled every 1 degree: the rotation error to the closest equivalent pose is then at most
# 0.5 degree too large.
CONTINUOUS_STEPS = 360
_FORBIDDEN = 1e9


def symmetric_pose_errors(T_est: np.ndarray, T_gt: np.ndarray, symmetries: np.ndarray) -> tuple[float, float]:
    """(translation m, rotation deg) from T_est to the one of the true poses T_gt @ S that look the same
    (ObjectModel.symmetry_transforms, the identity alone for an asymmetric object) closest to it in rotation."""
    T_closest = canonical_rotation(T_gt, symmetries, reference=T_est)
    return translation_error(T_est, T_closest), rotation_error_deg(T_est, T_closest)


def _assign(truths: list, estimates: list, diameter: float) -> list[tuple[int, int]]:
    """(truth, estimate) index pairs: minimum total origin distance, pairs farther apart than `diameter` dropped."""
    if not truths or not estimates:
        return []
    distance = np.array([[translation_error(T, E) for _, _, E in estimates] for _, _, T in truths])
    rows, cols = linear_sum_assignment(np.where(distance <= diameter, distance, _FORBIDDEN))
    return [(r, c) for r, c in zip(rows, cols) if distance[r, c] <= diameter]


def score(frames: list[tuple[list, list]], models: dict[int, ObjectModel], min_visible: float) -> dict:
    """Per-object figures (see the module docstring) over `frames`: (truth, estimates) pairs of one stamp, each a list
    of (obj_id, score, T_cam_obj); a truth's score is its visible share. Objects of `models` only."""
    symmetries = {i: m.symmetry_transforms(CONTINUOUS_STEPS) for i, m in models.items()}
    seen, extra = defaultdict(int), defaultdict(int)
    t_err, r_err, add_err, add_all = (defaultdict(list) for _ in range(4))
    for truth, estimates in frames:
        for obj_id, model in models.items():
            truths = [t for t in truth if t[0] == obj_id]
            mine = [e for e in estimates if e[0] == obj_id]
            pairs = dict(_assign(truths, mine, model.diameter_m))
            extra[obj_id] += len(mine) - len(pairs)
            for k, (_, visible, T_gt) in enumerate(truths):
                if visible < min_visible:
                    continue
                seen[obj_id] += 1
                if k not in pairs:
                    add_all[obj_id].append(np.inf)
                    continue
                T_est = mine[pairs[k]][2]
                t, r = symmetric_pose_errors(T_est, T_gt, symmetries[obj_id])
                add = pose_error(model.mesh.vertices, T_est, T_gt, model.symmetric)
                t_err[obj_id].append(t)
                r_err[obj_id].append(r)
                add_err[obj_id].append(add)
                add_all[obj_id].append(add)
    per_object = {}
    for obj_id in sorted(i for i in models if seen[i] or extra[i]):
        model, detected = models[obj_id], len(add_err[obj_id])
        per_object[model.name] = {
            'symmetric': model.symmetric, 'seen': seen[obj_id], 'detected': detected,
            'detection_rate': round(detected / seen[obj_id], 3) if seen[obj_id] else None,
            'median_translation_cm': _median(t_err[obj_id], 100.0),
            'median_rotation_deg': _median(r_err[obj_id], 1.0),
            'median_add_mm': _median(add_err[obj_id], 1000.0),
            'add_accuracy': round(add_accuracy(add_all[obj_id], model.diameter_m, ADD_FRACTION), 3)
            if seen[obj_id] else None,
            'extra_detections': extra[obj_id]}
    accuracies = [o['add_accuracy'] for o in per_object.values() if o['add_accuracy'] is not None]
    return {'frames_scored': len(frames), 'min_visible': min_visible, 'per_object': per_object,
            'mean_add_accuracy': round(float(np.mean(accuracies)), 3) if accuracies else None}


def _median(values: list[float], scale: float) -> float | None:
    return round(float(np.median(values)) * scale, 2) if values else None


def _rate(arrivals: list[float]) -> float | None:
    return round((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 2) if len(arrivals) > 1 and \
        arrivals[-1] > arrivals[0] else None


def report(summary: dict) -> str:
    """The summary as a table for the terminal."""
    def cell(value, unit=''):
        return '-' if value is None else f'{value}{unit}'

    lines = [f"demo objects: {summary['frames_rendered']} frames rendered, {summary['frames_processed']} through the "
             f"pipeline, {summary['frames_scored']} scored (instances at least {summary['min_visible']:.0%} visible)",
             f"{'object':<16}{'seen':>6}{'detected':>10}{'t (cm)':>8}{'r (deg)':>9}{'ADD(-S) mm':>12}"
             f"{'ADD(-S)@10%':>13}{'extra':>7}"]
    for name, o in summary['per_object'].items():
        rate = None if o['detection_rate'] is None else round(100 * o['detection_rate'])
        accuracy = None if o['add_accuracy'] is None else round(100 * o['add_accuracy'])
        lines.append(f"{name + (' (sym)' if o['symmetric'] else ''):<16}{o['seen']:>6}{cell(rate, ' %'):>10}"
                     f"{cell(o['median_translation_cm']):>8}{cell(o['median_rotation_deg']):>9}"
                     f"{cell(o['median_add_mm']):>12}{cell(accuracy, ' %'):>13}{o['extra_detections']:>7}")
    mean = summary['mean_add_accuracy']
    latency = summary['latency_ms']
    lines.append(f"mean ADD(-S)@10%: {cell(None if mean is None else round(100 * mean, 1), ' %')}; output "
                 f"{cell(summary['output_rate_hz'], ' Hz')} (camera {cell(summary['camera_rate_hz'], ' Hz')}); "
                 f"latency median {cell(latency.get('median'), ' ms')}, p95 {cell(latency.get('p95'), ' ms')}")
    if summary['unknown_objects']:
        lines.append(f"not in the keypoint model, not scored: {', '.join(summary['unknown_objects'])}")
    return '\n'.join(lines)


def run(overrides: dict, models: dict[int, ObjectModel], names_to_ids: dict[str, int], duration_s: float,
        min_visible: float) -> dict | None:
    """Run the object_pose graph with `overrides` for `duration_s` and score it; None when a node did not start."""
    from rclpy.node import Node
    from vision_msgs.msg import Detection3DArray

    from kp_pose_ros.graphs.runner import run_graph
    from kp_pose_ros.ros.detections import detections_3d_from_msg
    from kp_pose_ros.ros.stamps import stamp_to_ns

    by_name = {m.name: i for i, m in models.items()}
    truth, estimates, latency_ms = {}, {}, []
    arrivals = {'truth': [], 'estimates': []}
    with run_graph('object_pose', overrides) as graph:
        if graph.not_active:
            print(f"demo objects: not active (see the log above): {', '.join(graph.not_active)}", file=sys.stderr)
            return None
        observer = Node('demo_objects_observer', context=graph.context)
        clock = observer.get_clock()

        def on_truth(msg):
            arrivals['truth'].append(time.monotonic())
            truth[stamp_to_ns(msg.header.stamp)] = [(by_name[n], s, T) for n, s, T in detections_3d_from_msg(msg)
                                                    if n in by_name]

        def on_estimates(msg):
            arrivals['estimates'].append(time.monotonic())
            stamp = stamp_to_ns(msg.header.stamp)
            latency_ms.append((clock.now().nanoseconds - stamp) / 1e6)
            estimates[stamp] = [(names_to_ids[n], s, T) for n, s, T in detections_3d_from_msg(msg)
                                if n in names_to_ids]

        observer.create_subscription(Detection3DArray, '/sim/objects', on_truth, 50)
        observer.create_subscription(Detection3DArray, f'{NS}/detections_3d', on_estimates, 50)
        graph.executor.add_node(observer)
        try:
            start = time.monotonic()
            next_report = start + 5.0
            while time.monotonic() - start < duration_s:
                graph.executor.spin_once(timeout_sec=0.05)
                if time.monotonic() >= next_report:
                    next_report += 5.0
                    poses = sum(len(e) for e in estimates.values())
                    print(f'[{time.monotonic() - start:5.1f} s] {len(truth)} frames rendered, {len(estimates)} through '
                          f'the pipeline, {poses} poses', flush=True)
        finally:
            graph.executor.remove_node(observer)
            observer.destroy_node()
    known = {i: models[i] for i in set(names_to_ids.values()) if i in models}
    frames = [(truth[s], estimates[s]) for s in sorted(estimates) if s in truth]
    summary = score(frames, known, min_visible)
    seen_ids = {t[0] for objects in truth.values() for t in objects}
    return {'duration_s': duration_s, 'frames_rendered': len(truth), 'frames_processed': len(estimates), **summary,
            'unknown_objects': sorted(models[i].name for i in seen_ids - set(known)),
            'output_rate_hz': _rate(arrivals['estimates']), 'camera_rate_hz': _rate(arrivals['truth']),
            'latency_ms': {'median': round(float(np.median(latency_ms)), 1),
                           'p95': round(float(np.percentile(latency_ms, 95)), 1)} if latency_ms else {}}


def main(argv=None) -> int:
    from kp_pose_ros.graphs.sim_camera import objects_dir
    from kp_pose_ros.objects.estimator import model_set_files
    from kp_pose_ros.objects.keypoint_model import load_keypoint_set
    from kp_pose_ros.objects.models import load_bop_models

    parser = argparse.ArgumentParser(prog='kp-pose demo objects', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--duration', type=float, default=60.0, help='seconds to run')
    parser.add_argument('--object-set', default='lmo',
                        help='models <set>_detector.onnx and <set>_keypoints.onnx in the package models/')
    parser.add_argument('--detector-model', default='', help="YOLOv10 ONNX model (default: the object set's)")
    parser.add_argument('--keypoints-model', default='', help="object keypoint model (default: the object set's)")
    parser.add_argument('--objects-dir', default='',
                        help='BOP model folder the sim camera draws (default: ../shared/data/lmo/models beside '
                             'the repository)')
    parser.add_argument('--seed', default='0', help='scene seed')
    parser.add_argument('--rate-hz', default='10.0', help='sim camera frame rate (rendering caps it)')
    parser.add_argument('--score-threshold', default='0.3', help="the detector's score threshold")
    parser.add_argument('--rgbd', action='store_true', help='use the aligned depth to correct and score the poses')
    parser.add_argument('--min-visible', type=float, default=0.1,
                        help='instances less visible than this share of their silhouette are not scored')
    parser.add_argument('--providers', default='auto', choices=('auto', 'tensorrt', 'cuda', 'cpu'))
    parser.add_argument('--out', default=None, help='write the figures as JSON here')
    args = parser.parse_args(argv)

    folder = objects_dir(args.objects_dir)
    if not folder or not Path(folder).is_dir():
        print(f"demo objects: no object models at {folder or '../shared/data/lmo/models'}: the LINEMOD meshes (BOP "
              "model folder, CC BY 4.0) are not in the repository; put them there or name a BOP model folder with "
              "--objects-dir", file=sys.stderr)
        return 2
    set_detector, set_keypoints = model_set_files(args.object_set)
    detector = Path(args.detector_model or set_detector)
    keypoints = Path(args.keypoints_model or set_keypoints)
    missing = [str(p) for p in (detector, keypoints, keypoints.with_suffix('.yaml')) if not p.is_file()]
    if missing:
        print(f"demo objects: missing model files: {', '.join(missing)} (the '{args.object_set}' models come from "
              "kp_pose_ros.training.train_detector and train_object_keypoints; --detector-model and "
              "--keypoints-model name others)", file=sys.stderr)
        return 2
    models = load_bop_models(folder)
    obj_ids, names, _ = load_keypoint_set(keypoints)
    overrides = {'camera': 'sim', 'sim_objects_dir': folder, 'models_dir': folder, 'seed': args.seed,
                 'sim_rate_hz': args.rate_hz, 'detector_model': str(detector.resolve()),
                 'keypoints_model': str(keypoints.resolve()), 'rgbd': str(args.rgbd).lower(), 'overlay': 'false',
                 'score_threshold': args.score_threshold,
                 'providers': args.providers}
    summary = run(overrides, models, dict(zip(names, obj_ids)), args.duration, args.min_visible)
    if summary is None:
        return 1
    print(report(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1), encoding='utf-8')
        print(f'demo objects: figures written to {args.out}')
    if not summary['frames_scored']:
        print('demo objects: no frame went through the pipeline (see the log above)', file=sys.stderr)
        return 1
    return 0
