"""The throughput benchmarks' parts: the one-process-per-node launcher (graphs/processes.py), the pre-rendered 30 Hz
bags, and very short end-to-end runs of `kp-pose bench throughput` and `kp-pose bench object_throughput` against the
real robot_calib and object_pose graphs (the object ones need the LINEMOD meshes and the lmo models; skipped
without)."""
import os
import signal

import numpy as np
import pytest

# The bag's scene seed in these tests: a development seed, never the benchmark's (BAG_SEED).
DEV_SEED = 4344


def _spec(namespace, calibration_dir):
    from kp_pose_ros.graphs.spec import NodeSpec

    return NodeSpec(name='calibration_manager', executable='calibration_manager',
                    node_class='kp_pose_ros.nodes.calibration_manager:CalibrationManagerNode', namespace=namespace,
                    parameters={'calibration_dir': str(calibration_dir), 'window_size': 17})


def test_graph_processes_bring_a_graph_up_and_down(ros_node, tmp_path):
    from conftest import call_service
    from rcl_interfaces.srv import GetParameters

    from kp_pose_ros.graphs.processes import GraphProcesses, node_command, process_cpu_s, write_params_file

    node, executor = ros_node
    namespace = f'/kp_tp_{os.getpid()}'
    spec = _spec(namespace, tmp_path / 'calibrations')
    cmd = node_command(spec, write_params_file(spec, tmp_path / 'p.yaml'))
    assert cmd[1:4] == ['-m', 'kp_pose_ros.nodes.calibration_manager', '--autostart']
    assert f'__ns:={namespace}' in cmd and '__node:=calibration_manager' in cmd and '--params-file' in cmd

    with GraphProcesses([spec], log_dir=tmp_path / 'logs') as graph:
        assert graph.wait_active(node, executor, timeout_s=60.0) == {'calibration_manager': 'active'}
        proc = graph.processes['calibration_manager']
        assert proc.poll() is None and process_cpu_s(proc.pid) > 0.0
        # The parameters reached the node through the generated --params-file.
        reply = call_service(node, executor, GetParameters, f'{namespace}/calibration_manager/get_parameters',
                             names=['window_size'])
        assert reply.values[0].integer_value == 17
    assert graph.returncodes == {'calibration_manager': 0}  # SIGINT: a clean shutdown, as under launch
    assert proc.poll() is not None
    assert (tmp_path / 'logs' / 'calibration_manager.log').is_file()


def test_graph_processes_report_a_node_that_dies(ros_node, tmp_path):
    from kp_pose_ros.graphs.processes import GraphProcesses

    node, executor = ros_node
    with GraphProcesses([_spec(f'/kp_tp_dead_{os.getpid()}', tmp_path)], log_dir=tmp_path) as graph:
        os.killpg(graph.processes['calibration_manager'].pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match='exited'):
            graph.wait_active(node, executor, timeout_s=30.0)


def test_prerendered_bag_has_the_realsense_topics_at_30_hz(tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Image, JointState

    from kp_pose_ros.bench import throughput as tp

    frames = 4
    path, rendered = tp.ensure_bag(tmp_path / 'bag', frames, DEV_SEED)
    assert rendered and tp.read_bag_params(path) == tp.bag_params(frames, DEV_SEED)
    assert tp.ensure_bag(path, frames, DEV_SEED) == (path, False)  # cached
    truth = np.array(tp.read_bag_params(path, tp.TRUTH_DATA_KEY)['T_base_optical'])
    assert truth.shape == (4, 4) and np.allclose(truth[:3, :3] @ truth[:3, :3].T, np.eye(3), atol=1e-9)
    topics = tp.camera_topics()
    timed = {topics['color'], topics['color_info'], topics['depth'], topics['depth_info'], tp.JOINT_STATES}
    stamps = {}
    with Reader(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert set(conns) == timed | {tp.ROBOT_DESCRIPTION, tp.TF_STATIC}
        assert reader.message_count == len(timed) * frames + 2
        for topic in (tp.ROBOT_DESCRIPTION, tp.TF_STATIC):  # latched, so a late subscriber still gets them
            assert conns[topic].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        for conn, logtime, raw in reader.messages(connections=[conns[t] for t in timed]):
            cls = {'sensor_msgs/msg/Image': Image, 'sensor_msgs/msg/JointState': JointState}.get(conn.msgtype)
            if cls is None:
                continue
            msg = deserialize_message(bytes(raw), cls)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert stamp == logtime
            stamps.setdefault(conn.topic, []).append(stamp)
            if conn.topic == topics['color']:
                assert (msg.encoding, msg.width, msg.height) == ('rgb8', 640, 480)
                assert msg.header.frame_id == topics['optical_frame']
            if cls is JointState:
                assert len(msg.name) == len(msg.position) == 7
    expected = [tp.BASE_STAMP_NS + round(i * 1e9 / 30.0) for i in range(frames)]
    for topic in (topics['color'], topics['depth'], tp.JOINT_STATES):
        assert stamps[topic] == expected
    assert all(abs(b - a - 1e9 / 30.0) <= 1.0 for a, b in zip(expected, expected[1:]))

    tp.ensure_bag(path, frames + 1, DEV_SEED)  # other parameters: rendered again
    assert tp.read_bag_params(path)['frames'] == frames + 1


def test_throughput_benchmark_end_to_end(tmp_path):
    """A few frames through the real graph, one process per node: the result has every field and estimates came."""
    from kp_pose_ros.bench import throughput as tp

    # 24 frames: a cold machine (fresh CI clone) spends the first few frames loading caches in every process.
    results = tp.run(frames=24, bag_dir=tmp_path / 'bag', log_dir=tmp_path / 'logs', seed=DEV_SEED)
    assert results['images_published'] == 24
    assert results['estimates_received'] >= 1, results
    assert results['dropped_frames'] == 24 - results['estimates_received']
    lat = results['latency_ms']
    assert 0.0 < lat['median'] <= lat['p95'] <= lat['max']
    assert results['output_rate_hz'] is not None and results['input_rate_hz'] > 0
    # Known joints (the arm's /joint_states): the graph runs without the lifter.
    nodes = ('robot_keypoints', 'robot_pose_fitting', 'calibration_manager')
    assert set(nodes) | {'graph_total', 'benchmark_player', 'other_processes'} <= set(results['cpu_percent'])
    assert all(results['cpu_percent'][n] > 0.0 for n in nodes[:2])
    assert set(results['providers']) == set(nodes[:2])
    assert 'detect' in results['nodes']['robot_keypoints']['stages']
    assert results['node_states_at_start'] == {n: 'active' for n in nodes}
    assert results['machine']['cores_usable'] >= 1 and results['bag']['seed'] == DEV_SEED
    assert set(results['node_exit_codes'].values()) == {0}
    assert 'images published' in tp.report(results)
    # Accuracy of what came through, against the rendered truth (the first frames of this held-out sequence lock
    # onto a wrong pose, README "Throughput through the graph", so only its presence and range are checked here).
    acc = results['accuracy']
    assert acc['translation_cm']['median'] >= 0.0 and 0.0 <= acc['depth_aligned_percent'] <= 100.0


# --- the object_pose graph (kp-pose bench object_throughput) --------------------------------------------------------

# The object bags' scene seed in these tests: a development seed, never the benchmark's (BAG_SEEDS).
OBJECT_DEV_SEED = 4391


def test_object_bag_has_the_realsense_topics_at_30_hz_and_the_truth(tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection3DArray

    from kp_pose_ros.bench import object_throughput as ot

    if not ot.objects_dir().is_dir():
        pytest.skip(f'LINEMOD models not found at {ot.objects_dir()} (../shared/data is only on the development '
                    'machines)')
    assert OBJECT_DEV_SEED not in ot.BAG_SEEDS.values()
    frames, objects = 3, 2
    path, rendered = ot.ensure_bag(tmp_path / 'bag', frames, objects, OBJECT_DEV_SEED)
    assert rendered and ot.read_bag_params(path) == ot.bag_params(frames, objects, OBJECT_DEV_SEED)
    assert ot.ensure_bag(path, frames, objects, OBJECT_DEV_SEED) == (path, False)  # cached
    in_view = ot.read_bag_params(path, ot.TRUTH_DATA_KEY)['objects_in_view']
    topics = ot.camera_topics(ot.CAMERA)
    timed = {topics['color'], topics['color_info'], topics['depth'], topics['depth_info'], ot.SIM_OBJECTS}
    stamps, truth = {}, []
    with Reader(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert set(conns) == timed | {ot.TF_STATIC}
        assert reader.message_count == len(timed) * frames + 1
        for conn, logtime, raw in reader.messages(connections=[conns[t] for t in timed]):
            cls = {'sensor_msgs/msg/Image': Image, 'vision_msgs/msg/Detection3DArray': Detection3DArray}.get(
                conn.msgtype)
            if cls is None:
                continue
            msg = deserialize_message(bytes(raw), cls)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == logtime
            assert msg.header.frame_id == topics['optical_frame']
            stamps.setdefault(conn.topic, []).append(logtime)
            if cls is Detection3DArray:
                truth.append(msg)
    expected = [ot.BASE_STAMP_NS + round(i * 1e9 / 30.0) for i in range(frames)]
    assert stamps[topics['color']] == stamps[topics['depth']] == stamps[ot.SIM_OBJECTS] == expected
    # Every object of the layout in the truth, its visible share as the score; the count in view in the metadata.
    assert all(1 <= len(m.detections) <= objects for m in truth)
    assert in_view == [sum(d.results[0].hypothesis.score >= ot.MIN_VISIBLE for d in m.detections) for m in truth]


def test_object_throughput_benchmark_end_to_end(tmp_path):
    """20 frames of a 3-object bag through the real object_pose graph, one process per node: every field is there,
    detections_3d came, and instances reached the pose stage at the benchmark's low score threshold."""
    from kp_pose_ros.bench import object_throughput as ot

    why = ot.missing_inputs()
    if why:
        pytest.skip(why)
    results = ot.run(frames=20, bag_dir=tmp_path / 'bags', log_dir=tmp_path / 'logs', seeds={3: OBJECT_DEV_SEED})
    assert results['score_threshold'] == ot.SCORE_THRESHOLD < 0.3
    assert list(results['runs']) == ['3_objects']
    run = results['runs']['3_objects']
    assert run['bag']['seed'] == OBJECT_DEV_SEED and run['bag']['objects_per_layout'] == 3
    assert 1 <= run['bag']['objects_in_view']['mean'] <= 3
    assert run['images_published'] == 20
    assert run['detections_3d_received'] >= 1, run
    assert run['dropped_frames'] == 20 - run['detections_3d_received']
    lat = run['latency_ms']
    assert 0.0 < lat['median'] <= lat['p95'] <= lat['max']
    assert run['output_rate_hz'] is not None and run['input_rate_hz'] > 0
    nodes = ('object_detector', 'object_keypoints', 'object_pose')
    assert set(nodes) | {'graph_total', 'benchmark_player', 'other_processes'} <= set(run['cpu_percent'])
    assert run['cpu_percent']['object_detector'] > 0.0
    assert set(run['providers']) == set(nodes[:2])
    assert 'detect' in run['nodes']['object_detector']['stages']
    assert run['node_states_at_start'] == {n: 'active' for n in nodes}
    assert set(run['node_exit_codes'].values()) == {0}
    stages = run['instances_per_frame']
    assert set(stages) == {'detected', 'pose_stage', 'poses'}
    assert stages['poses']['frames'] == run['detections_3d_received']
    assert stages['pose_stage']['max'] >= 1  # the timing includes keypoints and PnP, not just the detector
    assert results['graph']['changed_defaults']['object_detector.score_threshold'] == ot.SCORE_THRESHOLD
    assert 'detections_3d' in ot.report(results)
