"""The object pipeline's estimator and `kp-pose eval object_pose` on real renders of LINEMOD models: with the true
boxes (--gt-boxes) and oracle keypoints (the true projections) the real PnP, depth and scoring path recovers every
pose, so ground truth scores as perfect; the shipped models run end to end through the same code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kp_pose_ros.objects import pose_eval
from kp_pose_ros.objects.bop import BopDataset
from kp_pose_ros.objects.estimator import ObjectEstimatorConfig, ObjectPoseEstimator, model_set_files
from kp_pose_ros.objects.keypoint_model import CropKeypoints
from kp_pose_ros.objects.keypoints import ObjectKeypoints
from kp_pose_ros.objects.models import load_bop_models
from kp_pose_ros.sim.bop_writer import write_bop
from kp_pose_ros.sim.camera_presets import preset
from kp_pose_ros.sim.objects import ObjectSceneConfig

LMO = Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'lmo'
DEV_SEED = 4377


def _lmo_or_skip() -> Path:
    if not (LMO / 'models_eval' / 'models_info.json').is_file():
        pytest.skip(f'LINEMOD-Occluded data not found at {LMO} (shared validation data, absent outside this '
                    'workplace)')
    return LMO


class OracleKeypoints:
    """The true projections of each object's model keypoints, confidence 1."""

    provider = 'oracle'

    def __init__(self, keypoints: ObjectKeypoints):
        self.obj_ids = tuple(sorted(keypoints.points))
        self.names = tuple(f'obj_{i:06d}' for i in self.obj_ids)
        self.keypoints_3d = tuple(keypoints.points[i] for i in self.obj_ids)
        self.gts, self.K = (), np.eye(3)

    def index_of(self, name):
        return self.names.index(name) if name in self.names else None

    def predict(self, rgb, boxes, object_index) -> CropKeypoints:
        pixels = []
        for box, k in zip(boxes, object_index):
            obj_id = self.obj_ids[k]
            candidates = [gt for gt in self.gts if gt.obj_id == obj_id and gt.bbox_visib is not None]
            gt = min(candidates, key=lambda g: np.abs(np.array(g.bbox_visib[:2]) - box[:2]).sum())
            camera = self.keypoints_3d[k] @ gt.T_cam_obj[:3, :3].T + gt.T_cam_obj[:3, 3]
            uv = camera @ self.K.T
            pixels.append(uv[:, :2] / uv[:, 2:])
        pixels = np.array(pixels).reshape(-1, len(self.keypoints_3d[0]), 2)
        return CropKeypoints(pixels, np.ones(pixels.shape[:2]), ())


class OracleDataset(BopDataset):
    """Hands each frame's truth to the oracles as the evaluation loads it."""

    def __init__(self, root, oracles, **kwargs):
        super().__init__(root, **kwargs)
        self.oracles = oracles

    def load_rgb(self, frame):
        for oracle in self.oracles:
            oracle.gts = frame.gts
            oracle.K = frame.K
        return super().load_rgb(frame)


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    models_dir = _lmo_or_skip() / 'models_eval'
    config = ObjectSceneConfig(camera=preset('kinect_xbox360'), objects_per_layout=6)
    return write_bop(tmp_path_factory.mktemp('bop') / 'lmo_dev', models_dir, 4, config, seed=DEV_SEED)


@pytest.mark.parametrize('use_depth', [False, True])
def test_ground_truth_scores_perfect(rendered, use_depth):
    models = load_bop_models(rendered / 'models')
    keypoints = ObjectKeypoints.for_models(models, 'fps', 8, seed=0)
    keypoint_model = OracleKeypoints(keypoints)
    estimator = ObjectPoseEstimator(None, keypoint_model, models,
                                    ObjectEstimatorConfig(use_depth=use_depth, one_per_class=False, track=False))
    dataset = OracleDataset(rendered, (keypoint_model,), split='train_pbr')
    figures = pose_eval.evaluate(estimator, dataset, models, use_depth=use_depth, gt_boxes=True)
    assert figures['frames'] == 4
    # Instances below the truth boxes' visibility cut have no detection and count as misses; every other is exact.
    seen = sum(gt.visib_fract >= pose_eval.TRUTH_MIN_VISIB_FRACT for f in dataset.frames() for gt in f.gts)
    total = sum(o['instances'] for o in figures['per_object'].values())
    correct = sum(o['instances'] * o['add_accuracy'] / 100.0 for o in figures['per_object'].values())
    assert correct == pytest.approx(seen, abs=0.01 * total)
    assert figures['detector']['precision'] == 1.0
    for o in figures['per_object'].values():
        if o['median_error_mm'] is not None and o['add_accuracy'] == 100.0:
            assert o['median_error_mm'] < 1.0
    json.dumps(figures)  # the CLI writes it as JSON


def test_shipped_models_run_end_to_end(rendered):
    detector_file, keypoints_file = model_set_files('lmo')
    if not detector_file.is_file() or not keypoints_file.is_file():
        pytest.skip('the lmo object models are not trained in this checkout')
    from kp_pose_ros.objects.estimator import load_estimator

    models = load_bop_models(rendered / 'models')
    estimator = load_estimator('lmo', models, ObjectEstimatorConfig(one_per_class=True, track=False), 'cpu', 1)
    dataset = BopDataset(rendered, split='train_pbr')
    figures = pose_eval.evaluate(estimator, dataset, models)
    assert set(figures['latency']) >= {'detect', 'keypoints', 'pose', 'total'}
    assert figures['providers'] == {'detector': 'CPUExecutionProvider', 'keypoints': 'CPUExecutionProvider'}
    frame = next(iter(dataset.frames()))
    result = estimator.estimate(dataset.load_rgb(frame), frame.K, stamp_s=1.0)
    for pose in result.poses:
        assert np.isfinite(pose.T_cam_obj).all() and pose.T_cam_obj[2, 3] > 0
        assert pose.keypoints_px.shape == (estimator.keypoint_model.num_keypoints, 2)


def test_shipped_models_on_real_lmo_frames():
    """The real LINEMOD-Occluded frames go through the same evaluation (accuracy is the README's, not a test's)."""
    root = _lmo_or_skip()
    detector_file, keypoints_file = model_set_files('lmo')
    if not detector_file.is_file() or not keypoints_file.is_file():
        pytest.skip('the lmo object models are not trained in this checkout')
    from kp_pose_ros.objects.estimator import load_estimator

    dataset = BopDataset(root)
    models = load_bop_models(dataset.models_dir)
    estimator = load_estimator('lmo', models, ObjectEstimatorConfig(track=False), 'cpu', 1)
    figures = pose_eval.evaluate(estimator, dataset, models, max_frames=2)
    assert figures['frames'] == 2
    assert set(figures['per_object']) <= {f'obj_{i:06d}' for i in estimator.keypoint_model.obj_ids}
    assert sum(o['instances'] for o in figures['per_object'].values()) > 0
    assert 0.0 <= figures['detector']['recall'] <= 1.0
    assert pose_eval.report(str(root), figures).count('\n') >= 3
