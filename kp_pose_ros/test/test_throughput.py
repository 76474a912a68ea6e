"""The throughput benchmark's parts: the one-process-per-node launcher (graphs/processes.py), the pre-rendered 30 Hz
bag, and a very short end-to-end run of `kp-pose bench throughput` against the real robot_calib graph."""
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
