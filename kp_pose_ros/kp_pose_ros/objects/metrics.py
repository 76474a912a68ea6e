"""Object pose and detection metrics as the rigid-object literature reports them: ADD / ADD-S and the ADD(-S)-0.1d
accuracy (Hinterstoisser et al. 2012, as PVNet and the BOP toolkit compute them), box IoU, detection matching and
AP50 (the detector's mAP50). Arrays in metres and pixels; ADD-AUC is core.metrics.add_auc.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial import cKDTree


def _transformed(points, T) -> np.ndarray:
    points, T = np.asarray(points, dtype=float), np.asarray(T, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3 or T.shape != (4, 4):
        raise ValueError(f'need (N, 3) points and a (4, 4) pose, got {points.shape} and {T.shape}')
    return points @ T[:3, :3].T + T[:3, 3]


def add_error(points, T_est, T_gt) -> float:
    """ADD: mean distance between the model points under the estimated and the true pose."""
    return float(np.linalg.norm(_transformed(points, T_est) - _transformed(points, T_gt), axis=1).mean())


def adds_error(points, T_est, T_gt) -> float:
    """ADD-S: mean distance from each model point under the true pose to the closest one under the estimated pose
    (symmetric objects: a pose that shows the same surface scores 0)."""
    distances, _ = cKDTree(_transformed(points, T_est)).query(_transformed(points, T_gt), k=1)
    return float(np.mean(distances))


def pose_error(points, T_est, T_gt, symmetric: bool) -> float:
    """ADD-S for a symmetric object, else ADD: the ADD(-S) of the LINEMOD literature."""
    return adds_error(points, T_est, T_gt) if symmetric else add_error(points, T_est, T_gt)


def add_accuracy(errors, diameters, fraction: float = 0.1) -> float:
    """Fraction (0-1) of poses whose ADD(-S) is below `fraction` of their object's diameter (a scalar, or one per
    error); NaN or inf errors (no pose) count as misses. NaN when there is no error."""
    errors = np.asarray(errors, dtype=float).reshape(-1)
    if errors.size == 0:
        return float('nan')
    thresholds = fraction * np.broadcast_to(np.asarray(diameters, dtype=float), errors.shape)
    return float(np.mean(errors < thresholds))  # NaN < t is False


def box_iou(a, b) -> np.ndarray:
    """(N, M) intersection over union of the xyxy boxes a (N, 4) and b (M, 4); 0 where a union is empty."""
    a, b = np.asarray(a, dtype=float).reshape(-1, 4), np.asarray(b, dtype=float).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(high - low, 0.0, None).prod(axis=2)
    union = _area(a)[:, None] + _area(b)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None).prod(axis=1)


def _true_positives(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes,
                    iou_threshold: float) -> np.ndarray:
    """Per prediction, whether it matches a ground-truth box: in descending score, each prediction takes the unmatched
    ground truth of its class it overlaps most, if that IoU reaches the threshold (COCO's greedy matching)."""
    pred_classes, gt_classes = np.asarray(pred_classes).reshape(-1), np.asarray(gt_classes).reshape(-1)
    scores = np.asarray(pred_scores, dtype=float).reshape(-1)
    iou = box_iou(pred_boxes, gt_boxes)
    if iou.shape != (len(scores), len(gt_classes)) or len(pred_classes) != len(scores):
        raise ValueError(f'{iou.shape[0]} boxes, {len(scores)} scores and {len(pred_classes)} classes predicted; '
                         f'{iou.shape[1]} boxes and {len(gt_classes)} classes of ground truth')
    iou[pred_classes[:, None] != gt_classes[None, :]] = -1.0
    matched = np.zeros(len(gt_classes), dtype=bool)
    tp = np.zeros(len(scores), dtype=bool)
    for i in np.argsort(-scores, kind='stable'):
        candidates = np.where(matched, -1.0, iou[i])
        if candidates.size and candidates.max() >= iou_threshold:
            j = int(np.argmax(candidates))
            matched[j] = tp[i] = True
    return tp


def match_detections(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes,
                     iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, missed ground truths) of one image's detections (xyxy boxes)."""
    tp = _true_positives(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, iou_threshold)
    return int(tp.sum()), int((~tp).sum()), int(len(np.asarray(gt_classes).reshape(-1)) - tp.sum())


def average_precision(images: Iterable[tuple], iou_threshold: float = 0.5) -> dict[int, float]:
    """AP per class (AP50 at the default threshold) over `images`, each (pred_boxes, pred_scores, pred_classes,
    gt_boxes, gt_classes) as match_detections takes them; classes without ground truth are left out, so
    mean(values) is mAP. The area under the precision envelope at every recall step (all-point interpolation, the
    'continuous' AP of ultralytics; its default 101-point sampling reads up to 0.005 lower)."""
    scores, classes, tps, gt_classes = [], [], [], []
    for pred_boxes, pred_scores, pred_classes, gt_boxes, gt_cls in images:
        tps.append(_true_positives(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_cls, iou_threshold))
        scores.append(np.asarray(pred_scores, dtype=float).reshape(-1))
        classes.append(np.asarray(pred_classes).reshape(-1))
        gt_classes.append(np.asarray(gt_cls).reshape(-1))
    if not gt_classes:
        return {}
    scores, classes, tps, gt_classes = (np.concatenate(x) for x in (scores, classes, tps, gt_classes))
    ap = {}
    for c in np.unique(gt_classes):
        order = np.argsort(-scores[classes == c], kind='stable')
        tp = tps[classes == c][order]
        tp_sum = np.cumsum(tp)
        recall = np.concatenate([[0.0], tp_sum / np.count_nonzero(gt_classes == c)])
        precision = tp_sum / np.arange(1, len(tp) + 1)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
        ap[int(c)] = float(np.sum(np.diff(recall) * envelope))
    return ap
