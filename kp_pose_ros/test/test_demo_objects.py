"""`kp-pose demo objects`: the per-object scoring against the sim camera's truth (matching, misses, false detections,
symmetric objects' errors to the closest equivalent pose), clear refusals without models or meshes, and a short run
of the object_pose graph on the sim camera (the shipped lmo models where present, else tiny fake ones: the figures'
structure, not their accuracy)."""
import json

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.transforms import make_transform
from kp_pose_ros.demo_objects import main, score, symmetric_pose_errors
from kp_pose_ros.objects.estimator import model_set_files
from kp_pose_ros.objects.models import ContinuousSymmetry, ObjectModel
from kp_pose_ros.paths import shared_data

LMO_MODELS = shared_data('lmo', 'models')


def _model(obj_id, mesh, **symmetries):
    return ObjectModel(obj_id, mesh, float(np.linalg.norm(mesh.extents)), mesh.convex_hull, **symmetries)


BOX = _model(1, trimesh.creation.box(extents=[0.10, 0.08, 0.06]))
CAN = _model(2, trimesh.creation.cylinder(radius=0.04, height=0.1, sections=64),
             symmetries_continuous=(ContinuousSymmetry((0.0, 0.0, 1.0)),))


def _pose(xyz, rotvec_deg=(0.0, 0.0, 0.0)):
    return make_transform(Rotation.from_rotvec(np.radians(rotvec_deg)).as_matrix(), xyz)


def test_score_matches_by_distance_counts_misses_and_extras_and_skips_hidden_instances():
    T_box, T_hidden, T_can = _pose([0.0, 0.0, 0.6], [10, 20, 30]), _pose([0.3, 0.0, 0.9]), _pose([-0.2, 0.05, 0.7])
    truth = [(1, 0.8, T_box), (1, 0.05, T_hidden), (2, 0.9, T_can)]
    estimates = [
        (1, 0.9, _pose([0.01, 0.0, 0.0]) @ T_box @ _pose([0, 0, 0], [0, 0, 5])),  # 1 cm, 5 deg off
        (1, 0.7, _pose([0.0, 0.01, 0.0]) @ T_hidden),  # an instance too hidden to score: neither a hit nor extra
        (1, 0.6, _pose([0.0, -0.4, 1.0])),  # nowhere near a box: a false detection
        (2, 0.8, _pose([0.0, 0.0, 0.002]) @ T_can @ _pose([0, 0, 0], [0, 0, 90])),  # turned about its axis
    ]
    summary = score([(truth, estimates), ([(1, 1.0, T_box)], [])], {1: BOX, 2: CAN}, min_visible=0.1)
    box, can = summary['per_object']['obj_000001'], summary['per_object']['obj_000002']
    assert summary['frames_scored'] == 2
    assert (box['seen'], box['detected'], box['detection_rate'], box['extra_detections']) == (2, 1, 0.5, 1)
    assert box['median_translation_cm'] == pytest.approx(1.0, abs=0.01)
    assert box['median_rotation_deg'] == pytest.approx(5.0, abs=0.01)
    assert box['add_accuracy'] == 0.5 and not box['symmetric']  # the miss counts as a failure
    assert can['symmetric'] and (can['seen'], can['detected'], can['extra_detections']) == (1, 1, 0)
    assert can['median_rotation_deg'] < 0.01 and can['median_translation_cm'] == pytest.approx(0.2, abs=0.01)
    assert can['median_add_mm'] < 3.0 and can['add_accuracy'] == 1.0
    assert summary['mean_add_accuracy'] == 0.75


def test_symmetric_errors_take_the_closest_equivalent_pose():
    T_gt = _pose([0.0, 0.0, 0.5], [30, 0, 0])
    T_est = T_gt @ _pose([0, 0, 0], [0, 0, 137.3]) @ _pose([0, 0, 0], [2, 0, 0])
    t, r = symmetric_pose_errors(T_est, T_gt, CAN.symmetry_transforms(360))
    assert t < 1e-9 and r == pytest.approx(2.0, abs=0.5)  # 137.3 deg about the axis look the same
    t, r = symmetric_pose_errors(T_est, T_gt, BOX.symmetry_transforms())
    assert r > 100.0


def test_refuses_clearly_without_meshes_or_models(tmp_path, capsys):
    assert main(['--objects-dir', str(tmp_path / 'nowhere')]) == 2
    assert 'no object models' in capsys.readouterr().err
    (tmp_path / 'bop').mkdir()
    assert main(['--objects-dir', str(tmp_path / 'bop'), '--detector-model', str(tmp_path / 'd.onnx'),
                 '--keypoints-model', str(tmp_path / 'k.onnx')]) == 2
    assert 'missing model files' in capsys.readouterr().err


@pytest.mark.skipif(not LMO_MODELS.is_dir(), reason=f'LINEMOD models not found at {LMO_MODELS} '
                    '(../shared/data is only on the development machines)')
def test_demo_runs_the_graph_on_the_sim_camera_and_reports_per_object(tmp_path, capsys):
    detector, keypoints = model_set_files('lmo')
    if not (detector.is_file() and keypoints.is_file()):  # structure only: fake models stand in
        from test_object_detector import fake_yolov10
        from test_object_nodes import ROWS, fake_keypoint_model

        detector, keypoints = fake_yolov10(tmp_path / 'fake_detector.onnx', ROWS), fake_keypoint_model(tmp_path)
    out = tmp_path / 'figures.json'
    rc = main(['--duration', '20', '--rate-hz', '5', '--providers', 'cpu', '--detector-model', str(detector),
               '--keypoints-model', str(keypoints), '--out', str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    summary = json.loads(out.read_text())
    assert summary['frames_rendered'] >= summary['frames_scored'] >= 1
    assert summary['output_rate_hz'] is None or summary['output_rate_hz'] > 0
    assert summary['latency_ms']['median'] > 0
    assert summary['per_object'], 'no known object was on the table'
    for name, figures in summary['per_object'].items():
        assert name.startswith('obj_') and set(figures) == {
            'symmetric', 'seen', 'detected', 'detection_rate', 'median_translation_cm', 'median_rotation_deg',
            'median_add_mm', 'add_accuracy', 'extra_detections'}
        assert name in printed
    assert 'ADD(-S)@10%' in printed and 'latency median' in printed
