"""robot/cell_recording.py on a bag of the suite's simulated RealSense cell (bench/throughput.write_bag, development
seed): the dataset it writes holds the bag's pixels, intrinsics and joints, keypoints where the simulator puts them,
and gives `kp-pose eval robot_calib` the reference calibration back; bags that lack what the layout needs are
refused naming what is missing."""
from pathlib import Path

import numpy as np
import pytest

SEED = 4321  # development seed (benchmark seeds are >= 100000)
FRAMES = 6
REPO = Path(__file__).resolve().parents[2]
REAL_BAG = REPO.parent / 'shared' / 'data' / 'realsense_d435' / 'rosbag2_cube_10frames'


def _bag_messages(bag: Path, topic: str) -> list:
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]


@pytest.fixture(scope='module')
def cell(tmp_path_factory):
    """(bag, reference calibration file, T_base_optical truth, converted dataset) of one simulated recording."""
    from kp_pose_ros.bench.throughput import TRUTH_DATA_KEY, read_bag_params, write_bag
    from kp_pose_ros.nodes.sim_camera import T_COLOR_OPTICAL, T_LINK_COLOR
    from kp_pose_ros.robot.calibration_store import save_calibration
    from kp_pose_ros.robot.cell_recording import convert

    root = tmp_path_factory.mktemp('cell')
    bag = root / 'bag'
    write_bag(bag, FRAMES, seed=SEED)
    T_base_optical = np.array(read_bag_params(bag, TRUTH_DATA_KEY)['T_base_optical'])
    # What the calibration manager saves: base -> camera_link, the driver's optical offset taken off.
    T_base_link = T_base_optical @ np.linalg.inv(T_LINK_COLOR @ T_COLOR_OPTICAL)
    reference = save_calibration(root / 'calibrations', 'reference', T_base_link, 'panda_link0', 'camera_link')
    report = convert(bag, root / 'dataset', reference)
    return bag, reference, T_base_optical, report


def test_dataset_holds_the_bags_frames_intrinsics_and_joints(cell):
    from kp_pose_ros.bench.throughput import JOINT_STATES, camera_topics
    from kp_pose_ros.sim.dataset import load_annotations, load_frame, load_meta

    bag, _, T_base_optical, report = cell
    topics = camera_topics()
    assert (report.frames, report.skipped_no_joints, report.without_depth) == (FRAMES, 0, 0)
    meta = load_meta(report.out)
    annotations = load_annotations(report.out)
    assert meta['complete'] and meta['num_frames'] == FRAMES and len(annotations) == FRAMES
    info = _bag_messages(bag, topics['color_info'])[0]
    joints = _bag_messages(bag, JOINT_STATES)
    colours = _bag_messages(bag, topics['color'])
    depths = _bag_messages(bag, topics['depth'])
    assert np.array_equal(meta['camera']['K'], info.k.reshape(3, 3))
    assert (meta['camera']['width'], meta['camera']['height']) == (info.width, info.height)
    for a, js, colour, depth in zip(annotations, joints, colours, depths):
        assert np.array_equal(a['K'], info.k.reshape(3, 3))
        assert a['joint_names'] == list(js.name) and np.array_equal(a['joint_positions'], js.position)
        assert np.allclose(a['T_base_cam'], T_base_optical, atol=1e-12)
        assert np.array_equal(a['visible'], a['in_image'])
        rgb, depth_m, mask = load_frame(report.out, a)
        assert np.array_equal(rgb, colour.data.reshape(rgb.shape))
        depth_mm = depth.data.view('<u2').reshape(depth_m.shape)
        assert np.array_equal(np.nan_to_num(depth_m * 1000).round(), depth_mm)
        assert not mask.any()  # no segmentation in a recording: unknown


def test_keypoints_are_where_the_simulator_puts_them(cell):
    """Keypoints from the simulator's own forward kinematics (pybullet) at the bag's joints, through the true
    camera pose: the converter's URDF kinematics, calibration and /tf_static chain agree to a thousandth of a
    pixel (pybullet computes in single precision)."""
    from kp_pose_ros.core.transforms import invert_transform, transform_points
    from kp_pose_ros.sim.camera_presets import preset
    from kp_pose_ros.sim.dataset import load_annotations
    from kp_pose_ros.sim.scene import SceneConfig, SimScene

    _, _, T_base_optical, report = cell
    camera = preset('realsense_d435')
    with SimScene(SceneConfig(camera=camera, renderer='tiny', random_background=False), seed=SEED) as scene:
        for a in load_annotations(report.out):
            scene.set_joint_positions(a['joint_positions'])
            truth_base = np.array([scene.link_pose(name)[:3, 3] for name in a['keypoint_names']])
            truth_px = camera.project(transform_points(invert_transform(T_base_optical), truth_base))
            assert np.allclose(a['keypoints_base'], truth_base, atol=1e-6)
            assert np.allclose(a['keypoints_px'], truth_px, atol=1e-3)
            assert a['in_image'].all()  # the sim places its camera to see the arm


def test_eval_on_the_dataset_gives_the_reference_calibration_back(cell):
    """The dataset through the real evaluation path (dataset_sequences, the node's estimator with known joints and
    depth) with its ground-truth keypoints: they agree with T_base_cam, so the aggregate is the reference to numerical
    precision. This alone cannot tell a wrong reference; the detector test below can."""
    from kp_pose_ros.robot import calib_eval
    from kp_pose_ros.robot.estimator import EstimatorConfig

    _, _, T_base_optical, report = cell
    [(camera_index, frames)] = list(calib_eval.dataset_sequences(report.out, None))
    assert camera_index == 0 and len(frames) == FRAMES
    estimator = calib_eval.robot_estimator(EstimatorConfig(joints_mode='known'), surface_points=300)
    result = calib_eval.run_sequence(estimator, frames, min_samples=FRAMES)
    calibration = result['calibration']
    assert calibration['error_m'] < 1e-6 and calibration['error_deg'] < 1e-4, calibration
    assert max(result['add_m']) < 1e-3


def test_the_detector_on_the_recorded_images_checks_the_reference(cell, tmp_path):
    """What a user runs (`kp-pose eval robot_calib --dataset DIR`: the shipped keypoint detector on the recorded
    images, known joints, recorded depth) finds the reference to a few millimetres, and a reference 3 cm off shows
    as a 3 cm calibration error: the pixels, intrinsics, joints, depth and T_base_cam of a dataset agree."""
    from kp_pose_ros.nodes.sim_camera import T_COLOR_OPTICAL, T_LINK_COLOR
    from kp_pose_ros.paths import model_file
    from kp_pose_ros.robot import calib_eval
    from kp_pose_ros.robot.calibration_store import save_calibration
    from kp_pose_ros.robot.cell_recording import convert
    from kp_pose_ros.robot.estimator import EstimatorConfig
    from kp_pose_ros.robot.keypoints import RobotKeypointDetector

    bag, _, T_base_optical, report = cell
    T_off = T_base_optical @ np.linalg.inv(T_LINK_COLOR @ T_COLOR_OPTICAL)
    T_off[0, 3] += 0.03
    convert(bag, tmp_path / 'off', save_calibration(tmp_path, 'off', T_off, 'panda_link0', 'camera_link'))
    detector = RobotKeypointDetector(str(model_file('robot_keypoints_panda.onnx')), threads=4)
    estimator = calib_eval.robot_estimator(EstimatorConfig(joints_mode='known'))
    errors = []
    for dataset in (report.out, tmp_path / 'off'):
        [(_, frames)] = list(calib_eval.dataset_sequences(dataset, detector.detect))
        errors.append(calib_eval.run_sequence(estimator, frames, min_samples=FRAMES)['calibration']['error_m'])
    assert errors[0] < 0.01 and 0.02 < errors[1] < 0.04, errors


def test_joint_offset_interpolates_between_joint_states(cell, tmp_path):
    """Joints half a frame after each image stamp: the mean of the two joint states around it; the last image has
    only the one before it within reach, used alone (never extrapolated)."""
    from kp_pose_ros.bench.throughput import JOINT_STATES, RATE_HZ
    from kp_pose_ros.robot.cell_recording import convert
    from kp_pose_ros.sim.dataset import load_annotations

    bag, reference, _, _ = cell
    convert(bag, tmp_path / 'offset', reference, joint_offset_s=0.5 / RATE_HZ, every=1)
    got = np.array([a['joint_positions'] for a in load_annotations(tmp_path / 'offset')])
    measured = np.array([m.position for m in _bag_messages(bag, JOINT_STATES)])
    assert np.allclose(got[:-1], (measured[:-1] + measured[1:]) / 2, atol=1e-12)
    assert np.array_equal(got[-1], measured[-1])


def test_without_depth_every_second_frame_gets_an_empty_depth(cell, tmp_path):
    from kp_pose_ros.bench.throughput import camera_topics
    from kp_pose_ros.robot.cell_recording import Topics, convert
    from kp_pose_ros.sim.dataset import load_annotations, load_frame

    bag, reference, _, _ = cell
    topics = camera_topics()
    report = convert(bag, tmp_path / 'rgb_only', reference, topics=Topics(topics['color'], '', topics['color_info']),
                     every=2, camera_index=7)
    annotations = load_annotations(report.out)
    assert (report.frames, report.without_depth) == (FRAMES // 2, FRAMES // 2)
    assert [a['camera_index'] for a in annotations] == [7] * (FRAMES // 2)
    assert all(np.isnan(load_frame(report.out, a)[1]).all() for a in annotations)  # all zero: no return


def test_a_sqlite3_bag_without_message_definitions_converts_the_same(cell, tmp_path):
    """Humble's sqlite3 bags carry no message definitions: read with the fallback ones, to the same annotations."""
    import sqlite3

    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from kp_pose_ros.robot.cell_recording import convert
    from kp_pose_ros.sim.dataset import ANNOTATIONS_FILE

    bag, reference, _, report = cell
    copy = tmp_path / 'sqlite'
    with Reader(bag) as reader, Writer(copy, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
                 for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            writer.write(conns[conn.id], stamp, raw)
    with sqlite3.connect(next(copy.glob('*.db3'))) as db:
        db.execute('DELETE FROM message_definitions')
    out = convert(copy, tmp_path / 'dataset', reference).out
    assert (out / ANNOTATIONS_FILE).read_text() == (report.out / ANNOTATIONS_FILE).read_text()


def test_a_missing_topic_is_named_with_the_bags_topics(cell, tmp_path, capsys):
    from kp_pose_ros.robot.cell_recording import main

    bag, reference, _, _ = cell
    code = main([str(bag), '--out', str(tmp_path / 'out'), '--calibration', str(reference),
                 '--joint-states-topic', '/franka/joint_states'])
    error = capsys.readouterr().err
    assert code == 1
    assert '/franka/joint_states (sensor_msgs/msg/JointState) is not in the bag' in error
    assert '/joint_states [sensor_msgs/msg/JointState]' in error  # what the bag does have
    assert not (tmp_path / 'out').exists()


def test_a_calibration_from_another_base_is_refused(cell, tmp_path):
    from kp_pose_ros.robot.calibration_store import save_calibration
    from kp_pose_ros.robot.cell_recording import CellRecordingError, convert

    bag, _, _, _ = cell
    other = save_calibration(tmp_path, 'world', np.eye(4), 'world', 'camera_link')
    with pytest.raises(CellRecordingError, match='world -> camera_link, but the robot base is panda_link0'):
        convert(bag, tmp_path / 'out', other)


@pytest.mark.skipif(not REAL_BAG.is_dir(), reason=f'real D435 bag not found at {REAL_BAG} (../shared/data is only '
                                                  'on the development machines)')
def test_a_real_camera_only_bag_is_refused_for_want_of_joint_states(tmp_path):
    """A real RealSense recording without the arm: the converter says /joint_states is missing."""
    import pybullet_data

    from kp_pose_ros.robot.calibration_store import save_calibration
    from kp_pose_ros.robot.cell_recording import CellRecordingError, Topics, convert

    reference = save_calibration(tmp_path, 'reference', np.eye(4), 'panda_link0', 'camera_color_optical_frame')
    topics = Topics('/camera/color/image_raw', '', '/camera/color/camera_info')
    urdf = Path(pybullet_data.getDataPath()) / 'franka_panda' / 'panda.urdf'
    with pytest.raises(CellRecordingError, match=r'/joint_states \(sensor_msgs/msg/JointState\) is not in the bag'):
        convert(REAL_BAG, tmp_path / 'out', reference, topics=topics, urdf=urdf)
