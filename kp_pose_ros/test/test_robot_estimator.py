"""robot_calib's per-frame policy (robot/estimator.py), the joint-state history it is fed from, and the evaluation
that scores it (robot/calib_eval.py): a sanity check that ground truth scores as perfect, the static-camera window
restarting when the camera moves, and bad input reported as a result."""
import numpy as np
import pytest

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.stamped_series import StampedSeries, interpolate_at
from kp_pose_ros.core.transforms import invert_transform, transform_points
from kp_pose_ros.robot import calib_eval
from kp_pose_ros.robot.estimator import EstimatorConfig, Observation, RobotCalibEstimator
from kp_pose_ros.sim.scene import look_at

CAMERA = CameraModel.from_fov(640, 480, 70.0)


@pytest.fixture(scope='module')
def kin():
    return calib_eval.robot_estimator(EstimatorConfig(depth_alignment=False)).kinematics


def _camera_pose(rng):
    target = np.array([0.0, 0.0, 0.4]) + rng.normal(0, 0.05, 3)
    az, el, dist = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 0.8), rng.uniform(1.2, 1.8)
    return look_at(target + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]), target)


def _frames(kin, T_base_cam, rng, count, noise_px=0.0):
    """Frames of a static camera watching random arm poses: exact joints, keypoints projected (+ noise)."""
    frames = []
    for q in kin.sample_joints(rng, count, margin=0.1):
        points_cam = transform_points(invert_transform(T_base_cam), kin.keypoints(q))
        px = CAMERA.project(points_cam) + rng.normal(0, noise_px, (len(points_cam), 2))
        frames.append(calib_eval.TruthFrame(Observation(CAMERA, px, np.ones(len(px)), joints=q), T_base_cam,
                                            points_cam))
    return frames


def test_stamped_series_interpolates_between_neighbours_and_keeps_a_time_span():
    series = StampedSeries(span_ns=1000)
    for t in (0, 300, 100, 200):  # out of order arrives in place
        series.add(t, np.array([float(t)]))
    before, after = series.bracket(150)
    assert (before[0], after[0]) == (100, 200)
    np.testing.assert_allclose(interpolate_at(150, before, after, max_gap_ns=100), [150.0])
    np.testing.assert_allclose(interpolate_at(350, *series.bracket(350), max_gap_ns=100), [300.0])  # no extrapolation
    assert interpolate_at(500, *series.bracket(500), max_gap_ns=100) is None
    series.add(1250, np.array([1250.0]))
    assert len(series) == 2 and series.bracket(250)[0] is None  # older than 1250 - 1000 dropped


def test_ground_truth_scores_as_perfect(kin):
    """The evaluation's sanity check: exact keypoints and joints give zero ADD, AUC 100 and an exact calibration."""
    rng = np.random.default_rng(11)
    T = _camera_pose(rng)
    estimator = RobotCalibEstimator(kin, EstimatorConfig(depth_alignment=False))
    sequence = calib_eval.run_sequence(estimator, _frames(kin, T, rng, 12))
    summary = calib_eval.summarise([sequence])
    assert summary['failures'] == 0 and summary['auc_0.1m'] > 99.9
    assert summary['add_median_m'] < 1e-6
    assert sequence['calibration']['error_m'] < 1e-6 and sequence['calibration']['error_deg'] < 1e-4


def test_static_window_restarts_when_the_camera_moves(kin):
    rng = np.random.default_rng(12)
    T_first, T_moved = _camera_pose(rng), None
    T_moved = T_first @ look_at([0.0, 0.0, 0.0], [0.05, 0.02, 1.0])  # the camera knocked by ~3 deg
    T_moved[:3, 3] += [0.03, -0.02, 0.01]
    estimator = RobotCalibEstimator(kin, EstimatorConfig(depth_alignment=False, static_camera_frames=30))
    for frame in _frames(kin, T_first, rng, 10, noise_px=1.0):
        assert estimator.estimate(frame.observation).success
    events, last = [], None
    for frame in _frames(kin, T_moved, rng, 6, noise_px=1.0):
        last = estimator.estimate(frame.observation)
        events += list(last.events)
    assert events == ['window_reset']
    assert np.linalg.norm(last.estimate.T_base_cam[:3, 3] - T_moved[:3, 3]) < 0.01


def test_window_keeps_its_pose_through_noise(kin):
    """Detector noise and an outlier frame must not count as a moved camera."""
    rng = np.random.default_rng(13)
    T = _camera_pose(rng)
    estimator = RobotCalibEstimator(kin, EstimatorConfig(depth_alignment=False))
    frames = _frames(kin, T, rng, 20, noise_px=3.0)
    wrong = frames[10].observation
    frames[10] = calib_eval.TruthFrame(Observation(CAMERA, wrong.pixels + 60.0, wrong.confidences,
                                                   joints=wrong.joints), T, frames[10].keypoints_cam)
    results = [estimator.estimate(f.observation) for f in frames]
    assert not any(r.events for r in results)
    # 3 px of noise on 7 keypoints at ~1.9 m: PnP over 20 frames puts the camera within a few centimetres.
    assert np.linalg.norm(results[-1].estimate.T_base_cam[:3, 3] - T[:3, 3]) < 0.04
    assert results[-1].estimate.message.startswith('20 frames')


def test_missing_joints_and_bad_depth_are_results_not_exceptions(kin):
    rng = np.random.default_rng(14)
    frame = _frames(kin, _camera_pose(rng), rng, 1)[0]
    known = RobotCalibEstimator(kin, EstimatorConfig(joints_mode='known', depth_alignment=False))
    result = known.estimate(Observation(CAMERA, frame.observation.pixels, frame.observation.confidences))
    assert not result.success and result.skipped == 'no_joint_states'
    # Unknown joints and no joint model: nothing to regress the joints with.
    result = RobotCalibEstimator(kin).estimate(Observation(CAMERA, frame.observation.pixels,
                                                           frame.observation.confidences))
    assert result.skipped == 'no_joint_states'
    depth_fitting = calib_eval.robot_estimator(EstimatorConfig(static_camera_frames=0), surface_points=300)
    wrong_size = np.ones((10, 10))
    result = depth_fitting.estimate(Observation(CAMERA, frame.observation.pixels, frame.observation.confidences,
                                                joints=frame.observation.joints, depth_m=wrong_size))
    assert result.depth_problem == 'bad_depth' and 'depth image unusable' in result.message
    assert result.success  # the keypoints still give the pose
    assert np.linalg.norm(result.estimate.T_base_cam[:3, 3] - frame.T_base_cam[:3, 3]) < 1e-3


def test_low_confidence_keypoints_are_ignored(kin):
    rng = np.random.default_rng(15)
    frame = _frames(kin, _camera_pose(rng), rng, 1)[0]
    px = frame.observation.pixels.copy()
    confidences = np.ones(len(px))
    px[:2] += 200.0  # two wrong keypoints, reported with low confidence
    confidences[:2] = 0.1
    estimator = RobotCalibEstimator(kin, EstimatorConfig(depth_alignment=False, static_camera_frames=0))
    result = estimator.estimate(Observation(CAMERA, px, confidences, joints=frame.observation.joints))
    assert np.all(np.isnan(result.estimate.residuals_px[:2]))
    assert np.linalg.norm(result.estimate.T_base_cam[:3, 3] - frame.T_base_cam[:3, 3]) < 1e-3
