"""`kp-pose eval object_pose`: the ObjectPoseEstimator on any BOP-format folder, scored as the paper and BOP do.

ADD(-S) accuracy at 10 % of the object diameter: ADD-S for objects models_info marks symmetric, ADD otherwise, with
the models_eval vertices. The annotated instances of an object are matched to its best-scored estimates, as the
BOP toolkit does (LINEMOD-style scenes: the one instance gets the best-scored pose); an instance left without an
estimate counts as a miss. The detector is
scored on its own: recall and precision at IoU 0.5 against the visible boxes, and AP50 per class.
"""
from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np

from kp_pose_ros.objects.bop import BopDataset
from kp_pose_ros.objects.detector import Detections
from kp_pose_ros.objects.estimator import ObjectPoseEstimator
from kp_pose_ros.objects.metrics import add_accuracy, average_precision, match_detections, pose_error
from kp_pose_ros.objects.models import ObjectModel

ADD_FRACTION = 0.1
DETECTION_IOU = 0.5
# --gt-boxes: instances less visible than this get no box (a detector is not expected to find them either).
TRUTH_MIN_VISIB_FRACT = 0.1


def _latency(values: list[float]) -> dict:
    return {'median_ms': round(float(np.median(values)), 1), 'p95_ms': round(float(np.percentile(values, 95)), 1)} \
        if values else {}


def evaluate(estimator: ObjectPoseEstimator, dataset: BopDataset, models_eval: dict[int, ObjectModel],
             use_depth: bool = False, max_frames: int | None = None, gt_boxes: bool = False, progress=None) -> dict:
    """Figures for the frames of `dataset` (the first `max_frames`; see the module docstring). `gt_boxes`: the
    annotated visible boxes replace the detector (truth_detections), which isolates the keypoint and pose stages."""
    known = set(estimator.keypoint_model.obj_ids)
    errors, diameters = defaultdict(list), {}
    stage_ms = defaultdict(list)
    images = []  # per frame, for the detector's figures
    frames = list(itertools.islice(dataset.frames(), max_frames))
    for n, frame in enumerate(frames):
        rgb = dataset.load_rgb(frame)
        depth = dataset.load_depth(frame) if use_depth and frame.depth_path is not None else None
        estimator.reset()  # frames of a BOP folder are not a video
        result = estimator.estimate(rgb, frame.K, depth, detections=truth_detections(estimator, frame.gts)
                                    if gt_boxes else None)
        for stage, ms in result.stage_ms.items():
            stage_ms[stage].append(ms)
        stage_ms['total'].append(sum(result.stage_ms.values()))
        gts = [gt for gt in frame.gts if gt.obj_id in known]
        for obj_id in {gt.obj_id for gt in gts}:
            model = models_eval[obj_id]
            diameters[obj_id] = model.diameter_m
            instances = [gt for gt in gts if gt.obj_id == obj_id]
            estimates = sorted((p for p in result.poses if p.obj_id == obj_id), key=lambda p: -p.score)
            errors[obj_id].extend(_matched_errors(np.asarray(model.mesh.vertices), model.symmetric,
                                                  estimates[:len(instances)], instances))
        images.append(_detection_tuple(estimator, result.detections, gts))
        if progress:
            progress(n + 1, len(frames))
    per_object = {}
    for obj_id in sorted(errors):
        e = np.array(errors[obj_id])
        per_object[f'obj_{obj_id:06d}'] = {
            'instances': int(e.size), 'symmetric': bool(models_eval[obj_id].symmetric),
            'add_accuracy': round(100.0 * add_accuracy(e, np.full(e.size, diameters[obj_id]), ADD_FRACTION), 1),
            'median_error_mm': round(1000.0 * float(np.median(e)), 1) if np.isfinite(e).any() else None}
    tp, fp, fn = np.sum([match_detections(*image, DETECTION_IOU) for image in images], axis=0).astype(int) \
        if images else (0, 0, 0)
    ap = {f'obj_{obj_id:06d}': round(100.0 * value, 1)
          for obj_id, value in average_precision(images, DETECTION_IOU).items()}
    return {
        'frames': len(frames), 'use_depth': use_depth, 'gt_boxes': gt_boxes,
        'mean_add_accuracy': round(float(np.mean([o['add_accuracy'] for o in per_object.values()])), 1)
        if per_object else None,
        'per_object': per_object,
        'detector': {'iou': DETECTION_IOU, 'tp': int(tp), 'fp': int(fp), 'fn': int(fn),
                     'recall': round(tp / max(tp + fn, 1), 3), 'precision': round(tp / max(tp + fp, 1), 3),
                     'ap50': ap, 'map50': round(float(np.mean(list(ap.values()))), 1) if ap else None},
        'latency': {stage: _latency(v) for stage, v in stage_ms.items()},
        'providers': {'detector': 'none (true boxes)' if gt_boxes else estimator.detector.provider,
                      'keypoints': estimator.keypoint_model.provider},
    }


def truth_detections(estimator: ObjectPoseEstimator, gts, min_visib_fract: float = TRUTH_MIN_VISIB_FRACT
                     ) -> Detections:
    """The annotated visible boxes of the objects the keypoint model knows, as a perfect detector would report them
    (score 1), for instances at least `min_visib_fract` visible."""
    km = estimator.keypoint_model
    chosen = [gt for gt in gts if gt.obj_id in km.obj_ids and gt.bbox_visib is not None
              and (gt.visib_fract or 0.0) >= min_visib_fract]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (gt.bbox_visib for gt in chosen)], float)
    return Detections(boxes.reshape(-1, 4), np.ones(len(chosen)),
                      np.array([km.obj_ids.index(gt.obj_id) for gt in chosen], int),
                      dict(enumerate(km.names)))


def _matched_errors(points: np.ndarray, symmetric: bool, estimates: list, instances: list) -> list[float]:
    """One error per annotated instance: the object's best-scored estimates (as many as there are instances) each
    take, in score order, the unmatched instance they fit best, as the BOP toolkit matches them; instances left
    without an estimate are misses (inf)."""
    left = list(range(len(instances)))
    out = [np.inf] * len(instances)
    for pose in estimates:
        errors = [pose_error(points, pose.T_cam_obj, instances[i].T_cam_obj, symmetric) for i in left]
        best = int(np.argmin(errors))
        out[left.pop(best)] = errors[best]
    return out


def _detection_tuple(estimator: ObjectPoseEstimator, detections, gts) -> tuple:
    """(pred boxes, scores, classes, gt boxes, classes) of one image, classes as obj_ids, for the detections of
    objects the keypoint model knows and the instances with a visible box."""
    km = estimator.keypoint_model
    index = [km.index_of(detections.names[int(c)]) for c in detections.class_ids]
    keep = np.array([i is not None for i in index], bool).reshape(-1)
    pred_classes = np.array([km.obj_ids[i] for i in index if i is not None], int)
    boxed = [gt for gt in gts if gt.bbox_visib is not None and min(gt.bbox_visib[2:]) > 0]
    gt_boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (gt.bbox_visib for gt in boxed)], float).reshape(-1, 4)
    return (detections.boxes[keep], detections.scores[keep], pred_classes, gt_boxes,
            np.array([gt.obj_id for gt in boxed], int))


def report(root: str, figures: dict) -> str:
    """A few lines for the terminal."""
    lines = [f'{root}: {figures["frames"]} frames, depth {"on" if figures["use_depth"] else "off"}'
             f'{", true boxes" if figures["gt_boxes"] else ""}: '
             f'mean ADD(-S)@{int(ADD_FRACTION * 100)}% {figures["mean_add_accuracy"]} %']
    for name, o in figures['per_object'].items():
        lines.append(f'  {name}{" (sym)" if o["symmetric"] else ""}: {o["add_accuracy"]} % of {o["instances"]}, '
                     f'median error {o["median_error_mm"]} mm')
    d = figures['detector']
    lines.append(f'  detector @IoU {d["iou"]}: recall {d["recall"]}, precision {d["precision"]}, mAP50 {d["map50"]}')
    lines.append('  latency: ' + ', '.join(f'{k} {v.get("median_ms")} ms (p95 {v.get("p95_ms")})'
                                           for k, v in figures['latency'].items()))
    lines.append(f'  providers: {figures["providers"]}')
    return '\n'.join(lines)
