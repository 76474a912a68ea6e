"""robot.keypoint_accuracy: the figures the keypoint manifest and `kp-pose eval robot_keypoints` report."""
import numpy as np

from kp_pose_ros.robot.keypoint_accuracy import CORRECT_PX, confidence_reliability


def test_confidence_reliability_picks_the_lowest_threshold_that_is_right_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    n = 4000
    confidence = rng.uniform(0.0, 1.0, n)
    # Right with probability equal to the confidence: above t, P(right) = (1 + t) / 2 >= 0.95 from t = 0.9.
    right = rng.uniform(0.0, 1.0, n) < confidence
    errors = np.where(right, 0.5 * CORRECT_PX, 3 * CORRECT_PX)
    errors[:5] = np.nan  # behind the camera: never right
    in_image = np.ones(n, bool)
    visible = confidence > 0.2
    report = confidence_reliability(confidence, errors, in_image, visible)
    assert report['threshold_meets_target']
    assert 0.86 <= report['threshold'] <= 0.93
    assert report['reliability_above_threshold'] >= 0.95
    assert report['occluded_above'] == 0.0
    assert sum(b['count'] for b in report['per_bin']) == n
    top = report['per_bin'][-1]
    assert top['right'] > 0.9 and report['per_bin'][0]['right'] < 0.15


def test_confidence_reliability_says_when_no_threshold_is_reliable():
    confidence = np.linspace(0.0, 1.0, 100)
    errors = np.full(100, 100.0)
    report = confidence_reliability(confidence, errors, np.ones(100, bool), np.ones(100, bool))
    assert not report['threshold_meets_target']


def test_eval_command_on_a_rendered_dataset(tmp_path):
    """`kp-pose eval robot_keypoints` runs the shipped detector over a dataset and writes every figure."""
    import json

    from kp_pose_ros.cli import main
    from kp_pose_ros.sim.dataset import write_dataset
    from kp_pose_ros.sim.scene import SceneConfig

    write_dataset(tmp_path / 'data', 4, SceneConfig(), seed=5)
    out = tmp_path / 'eval.json'
    assert main(['eval', 'robot_keypoints', '--dataset', str(tmp_path / 'data'), '--threads', '1',
                 '--providers', 'cpu', '--out', str(out)]) == 0
    summary = json.loads(out.read_text())['datasets'][str(tmp_path / 'data')]
    assert summary['frames'] == 4 and summary['image_size'] == [640, 480]
    assert summary['confidence']['keypoints'] == 28
    assert sum(b['count'] for b in summary['confidence']['per_bin']) == 28
    # The shipped model finds a clean render's visible keypoints (its validation median is ~5 px).
    assert summary['visible_at_640px_width']['median_px'] < 15.0
