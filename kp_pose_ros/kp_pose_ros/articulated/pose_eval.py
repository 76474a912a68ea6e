"""`kp-pose eval articulated_pose`: per-category, per-part accuracy of the articulated estimator on a dataset written
by sim.procedural_writer (or recorded by a user in that layout: rgb/, depth/ (uint16 mm), instance/, annotations.jsonl
with K, each articulated instance's asset URDF, part poses and joint states).

An estimated object is matched to the annotated instance whose mask its region overlaps most (IoU >= MATCH_IOU), of
the same category; with true regions the estimator is given each instance's mask (isolating segmentation). Per part:
rotation error (deg) and translation error (m) of the part's box frame (its link frame at the box centre), 3D IoU of
the oriented boxes (estimated extents = scale x category proportions); per joint: |error| in deg or m. Instances with
fewer than MIN_VISIBLE_PX visible pixels are not counted.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from kp_pose_ros.articulated.categories import ArticulatedInstance
from kp_pose_ros.articulated.estimator import STAGES, ArticulatedPoseEstimator
from kp_pose_ros.articulated.part_fit import box_iou_3d, joint_error
from kp_pose_ros.core.camera import CameraModel

MATCH_IOU = 0.3
MIN_VISIBLE_PX = 1500


def _rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    cos = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _truth(root: Path, inst: dict, cache: dict) -> tuple[ArticulatedInstance, np.ndarray]:
    if inst['asset'] not in cache:
        cache[inst['asset']] = ArticulatedInstance(root / inst['asset'], inst['category'])
    art = cache[inst['asset']]
    parts = {p['name']: np.asarray(p['T_cam_part']) for p in inst['parts']}
    T_box = np.array([parts[name] for name in art.part_names]) @ art.box_offsets()
    return art, T_box


def evaluate(estimator: ArticulatedPoseEstimator, root: str | Path, true_regions: bool = False,
             max_frames: int | None = None) -> dict:
    root = Path(root)
    lines = (root / 'annotations.jsonl').read_text().splitlines()[:max_frames]
    cache: dict = {}
    rows: dict[str, dict] = {}
    latency = {s: [] for s in STAGES}
    voting_per_object, total = [], []
    for line in lines:
        frame = json.loads(line)
        truth = [i for i in frame['instances'] if i['kind'] == 'articulated' and i['category'] in estimator.categories
                 and i['visible_px'] >= MIN_VISIBLE_PX]
        rgb = cv2.cvtColor(cv2.imread(str(root / frame['rgb'])), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(root / frame['depth']), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0
        instance_png = cv2.imread(str(root / frame['instance_mask']), cv2.IMREAD_UNCHANGED)
        K = np.asarray(frame['K'])
        camera = CameraModel.pinhole(depth.shape[1], depth.shape[0], K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        masks = [instance_png == i['mask_value'] for i in truth]
        result = estimator.estimate(rgb, np.where(depth > 0, depth, np.nan), camera,
                                    regions=masks if true_regions else None)
        for s in STAGES:
            latency[s].append(result.timings_s[s])
        total.append(sum(result.timings_s.values()))
        if result.objects:
            voting_per_object.append(result.timings_s['voting'] / len(result.objects))
        used = set()
        for inst, mask in zip(truth, masks):
            row = rows.setdefault(inst['category'], {'instances': 0, 'found': 0, 'parts': {}, 'joints': {}})
            row['instances'] += 1
            best, best_iou = None, MATCH_IOU
            for k, obj in enumerate(result.objects):
                iou = np.sum(obj.voted.region & mask) / max(np.sum(obj.voted.region | mask), 1)
                if k not in used and iou >= best_iou:
                    best, best_iou = k, iou
            if best is None or result.objects[best].category != inst['category']:
                continue
            used.add(best)
            obj = result.objects[best]
            row['found'] += 1
            art, T_true = _truth(root, inst, cache)
            for p, name in enumerate(art.part_names):
                part = row['parts'].setdefault(name, {'rotation_deg': [], 'translation_m': [], 'iou_3d': [],
                                                      'located': 0})
                if not obj.fit.located[p]:
                    continue
                part['located'] += 1
                T = obj.T_cam_box[p]
                part['rotation_deg'].append(_rotation_deg(T[:3, :3], T_true[p, :3, :3]))
                part['translation_m'].append(float(np.linalg.norm(T[:3, 3] - T_true[p, :3, 3])))
                part['iou_3d'].append(box_iou_3d(T, obj.fit.extents[p], T_true[p], art.parts[p].extents))
            states = {j['name']: j['state'] for j in inst['joints']}
            q_true = np.array([states[n] for n in obj.joint_names])
            errors = joint_error(obj.joint_values, q_true, obj.joint_types)
            for name, kind, e in zip(obj.joint_names, obj.joint_types, errors):
                if np.isfinite(e):
                    row['joints'].setdefault(name, {'type': kind, 'errors': []})['errors'].append(
                        float(np.degrees(e)) if kind == 'revolute' else float(e))
    return {'frames': len(lines), 'true_regions': true_regions, 'categories': _summary(rows),
            'latency_ms': {**{s: _ms(v) for s, v in latency.items()}, 'total': _ms(total),
                           'voting_per_object': _ms(voting_per_object)},
            'config': {'method': estimator.config.method, 'keypoints_from': estimator.config.keypoints_from,
                       'rho_m': estimator.config.voting.rho_m}}


def _ms(values) -> dict:
    if not values:
        return {'median': None, 'p95': None}
    ms = np.asarray(values) * 1000
    return {'median': round(float(np.median(ms)), 1), 'p95': round(float(np.percentile(ms, 95)), 1)}


def _stats(values) -> dict:
    if not values:
        return {'mean': None, 'median': None}
    return {'mean': round(float(np.mean(values)), 4), 'median': round(float(np.median(values)), 4)}


def _summary(rows: dict) -> dict:
    out = {}
    for category, row in sorted(rows.items()):
        out[category] = {
            'instances': row['instances'], 'found': row['found'],
            'parts': {name: {'located': p['located'], 'rotation_deg': _stats(p['rotation_deg']),
                             'translation_m': _stats(p['translation_m']), 'iou_3d': _stats(p['iou_3d'])}
                      for name, p in row['parts'].items()},
            'joints': {name: {'type': j['type'], 'unit': 'deg' if j['type'] == 'revolute' else 'm',
                              **_stats(j['errors'])} for name, j in row['joints'].items()}}
    return out


def report(root: str, figures: dict) -> str:
    """A table: per category and part, mean rotation / translation error and 3D IoU; per joint, the mean error."""
    lines = [f'{root}: {figures["frames"]} frames, {figures["config"]}, '
             f'{"true regions" if figures["true_regions"] else "depth segmentation"}',
             f'{"category":<11} {"part":<13} {"found":>9} {"rot deg":>8} {"trans m":>8} {"3D IoU":>7}']
    for category, c in figures['categories'].items():
        for name, p in c['parts'].items():
            lines.append(f'{category:<11} {name:<13} {p["located"]:>4}/{c["instances"]:<4} '
                         f'{_fmt(p["rotation_deg"]["mean"], 1):>8} {_fmt(p["translation_m"]["mean"], 3):>8} '
                         f'{_fmt(p["iou_3d"]["mean"], 2):>7}')
        for name, j in c['joints'].items():
            lines.append(f'{category:<11} {name:<13} joint error {_fmt(j["mean"], 3)} {j["unit"]} (median '
                         f'{_fmt(j["median"], 3)})')
    lat = figures['latency_ms']
    lines.append(f'latency ms (median / p95): total {lat["total"]["median"]} / {lat["total"]["p95"]}, voting per '
                 f'object {lat["voting_per_object"]["median"]} / {lat["voting_per_object"]["p95"]}, '
                 + ', '.join(f'{s} {lat[s]["median"]}' for s in STAGES))
    return '\n'.join(lines)


def _fmt(value, digits: int) -> str:
    return '-' if value is None else f'{value:.{digits}f}'
