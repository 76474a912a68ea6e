"""Every node is a lifecycle node: transitions through the real lifecycle_msgs services, a missing or corrupt model
fails configure with the file named and is fixed in place, parameters change through the real parameter services
(live ones take effect, structural ones are refused while configured), QoS follows the parameters, and an
exception in a callback is counted and logged but never ends the executor."""
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import call_service, spin_until

from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec
from kp_pose_ros.paths import model_file

KEYPOINTS = 'kp_pose_ros.nodes.robot_keypoints:RobotKeypointsNode'
NODE = '/robot_calib/robot_keypoints'


def _keypoints_spec(model, **parameters):
    return NodeSpec(name='robot_keypoints', namespace='/robot_calib', executable='robot_keypoints',
                    node_class=KEYPOINTS, parameters={'model': str(model), **parameters},
                    remappings=[('image', '/lc_test/image')])


def _state(node, executor, name=NODE):
    from lifecycle_msgs.srv import GetState
    return call_service(node, executor, GetState, f'{name}/get_state').current_state.label


def _transition(node, executor, transition_id, name=NODE):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    return call_service(node, executor, ChangeState, f'{name}/change_state',
                        transition=Transition(id=transition_id)).success


def _set(node, executor, name, value, node_name=NODE):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    result = call_service(node, executor, SetParameters, f'{node_name}/set_parameters',
                          parameters=[Parameter(name, value=value).to_parameter_msg()])
    return result.results[0]


def _image(node, rgb):
    from std_msgs.msg import Header

    from kp_pose_ros.ros.images import array_to_image
    return array_to_image(rgb, 'rgb8', Header(stamp=node.get_clock().now().to_msg(), frame_id='cam'))


def _status_of(node_name, arrays):
    for array in reversed(arrays):
        for status in array.status:
            if status.name == node_name:
                return status
    return None


@contextmanager
def _running_keypoints(node, executor):
    """The keypoints node with the committed model, active beside `node`; yields it, its outputs and an image
    publisher it is subscribed to."""
    from sensor_msgs.msg import Image

    from kp_pose_msgs.msg import KeypointArray

    out = []
    sub = node.create_subscription(KeypointArray, '/robot_calib/keypoints_2d', out.append, 10)
    pub = node.create_publisher(Image, '/lc_test/image', 10)
    with GraphRun([_keypoints_spec('robot_keypoints_panda.onnx')], context=node.context) as run:
        keypoints = run.nodes[0]
        executor.add_node(keypoints)
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 5.0)
        try:
            yield keypoints, out, pub
        finally:
            executor.remove_node(keypoints)
            node.destroy_subscription(sub)
            node.destroy_publisher(pub)


def test_missing_then_fixed_model_through_lifecycle_services(ros_node, tmp_path):
    """Configure fails naming the missing file and the node stays alive and unconfigured, with ERROR in
    /diagnostics; once the file exists, configure and activate through the services bring it to work; deactivate
    stops it; cleanup frees the model."""
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import Image

    from kp_pose_msgs.msg import KeypointArray
    from kp_pose_ros.ros.diagnostics import ERROR, level_of

    node, executor = ros_node
    model = tmp_path / 'keypoints.onnx'
    out, diagnostics = [], []
    node.create_subscription(KeypointArray, '/robot_calib/keypoints_2d', out.append, 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 50)
    pub = node.create_publisher(Image, '/lc_test/image', 10)
    with GraphRun([_keypoints_spec(model)], context=node.context) as run:
        keypoints = run.nodes[0]
        executor.add_node(keypoints)
        assert run.not_active == ['robot_keypoints']
        assert _state(node, executor) == 'unconfigured'
        assert spin_until(executor, lambda: _status_of(NODE, diagnostics) is not None, 5.0)
        status = _status_of(NODE, diagnostics)
        assert level_of(status.level) == ERROR and str(model) in status.message

        assert not _transition(node, executor, Transition.TRANSITION_CONFIGURE)
        assert _state(node, executor) == 'unconfigured'

        shutil.copy(model_file('robot_keypoints_panda.onnx'), model)
        shutil.copy(model_file('robot_keypoints_panda.yaml'), model.with_suffix('.yaml'))
        assert _transition(node, executor, Transition.TRANSITION_CONFIGURE)
        assert _state(node, executor) == 'inactive'
        pub.publish(_image(node, np.zeros((240, 320, 3), np.uint8)))
        spin_until(executor, lambda: False, 0.5)
        assert not out, 'an inactive node must not process images'

        assert _transition(node, executor, Transition.TRANSITION_ACTIVATE)
        assert _state(node, executor) == 'active'
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 5.0)
        pub.publish(_image(node, np.zeros((240, 320, 3), np.uint8)))
        assert spin_until(executor, lambda: len(out) == 1, 10.0)
        assert len(out[0].instances[0].keypoints_2d) == len(keypoints.detector.keypoint_names)

        assert _transition(node, executor, Transition.TRANSITION_DEACTIVATE)
        assert spin_until(executor, lambda: pub.get_subscription_count() == 0, 5.0)
        assert _transition(node, executor, Transition.TRANSITION_CLEANUP)
        assert keypoints.detector is None and _state(node, executor) == 'unconfigured'
        executor.remove_node(keypoints)


def test_corrupt_model_fails_configure_naming_the_file(ros_context, tmp_path):
    model = tmp_path / 'corrupt.onnx'
    model.write_bytes(b'this is not an onnx file')
    shutil.copy(model_file('robot_keypoints_panda.yaml'), model.with_suffix('.yaml'))
    with GraphRun([_keypoints_spec(model)], context=ros_context) as run:
        assert run.not_active == ['robot_keypoints']
        node = run.nodes[0]
        assert node.state == 'unconfigured' and node.detector is None
        status = node.diagnostics.status()
        assert str(model) in status.message and 'configure failed' in status.message


def test_parameters_through_the_parameter_services(ros_node):
    """A live parameter changes behaviour at once; bad values and structural changes while configured are refused
    with a reason; structural ones are accepted while unconfigured and read at the next configure."""
    from lifecycle_msgs.msg import Transition

    node, executor = ros_node
    with _running_keypoints(node, executor) as (keypoints, out, pub):
        assert keypoints.state == 'active'
        old = _image(node, np.zeros((240, 320, 3), np.uint8))
        old.header.stamp.sec -= 5  # 5 s old: dropped under the default max_image_age_s of 1 s
        pub.publish(old)
        spin_until(executor, lambda: False, 0.5)
        assert not out

        assert _set(node, executor, 'max_image_age_s', 30.0).successful
        assert keypoints.p.max_image_age_s == 30.0
        pub.publish(old)
        assert spin_until(executor, lambda: len(out) == 1, 10.0), 'the live value was not used'

        refused = _set(node, executor, 'max_image_age_s', 1000.0)  # outside [0, 60]
        assert not refused.successful and keypoints.p.max_image_age_s == 30.0
        refused = _set(node, executor, 'model', 'other.onnx')
        assert not refused.successful and 'structural' in refused.reason and 'cleanup' in refused.reason
        refused = _set(node, executor, 'providers', 'opencl')
        assert not refused.successful and 'one of' in refused.reason

        def cannot_take(name, value):
            raise RuntimeError('cannot rebuild')
        keypoints.on_parameter_change = cannot_take  # a node that cannot take a value refuses it, and keeps working
        refused = _set(node, executor, 'max_image_age_s', 5.0)
        assert not refused.successful and 'cannot rebuild' in refused.reason and keypoints.p.max_image_age_s == 30.0
        assert node.context.ok() and keypoints.state == 'active'

        assert _transition(node, executor, Transition.TRANSITION_DEACTIVATE)
        assert _transition(node, executor, Transition.TRANSITION_CLEANUP)
        assert _set(node, executor, 'model', '/nowhere/else.onnx').successful
        assert not _transition(node, executor, Transition.TRANSITION_CONFIGURE), 'configure must read the new value'
        assert _set(node, executor, 'model', 'robot_keypoints_panda.onnx').successful
        assert _transition(node, executor, Transition.TRANSITION_CONFIGURE)


@pytest.mark.parametrize('reliability', ['best_effort', 'reliable'])
def test_subscription_qos_follows_parameters(ros_context, reliability):
    from rclpy.qos import ReliabilityPolicy

    spec = _keypoints_spec('robot_keypoints_panda.onnx', **{'qos.reliability': reliability, 'qos.depth': 7})
    with GraphRun([spec], context=ros_context) as run:
        infos = run.nodes[0].get_subscriptions_info_by_topic('/lc_test/image')
        assert len(infos) == 1
        qos = infos[0].qos_profile
        assert qos.reliability == (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                                   else ReliabilityPolicy.BEST_EFFORT)


def test_exception_in_a_callback_is_counted_and_never_ends_the_executor(ros_node):
    node, executor = ros_node
    with _running_keypoints(node, executor) as (keypoints, out, pub):
        detect = keypoints.detector.detect

        def broken(rgb):
            raise RuntimeError('injected failure')
        keypoints.detector.detect = broken
        for _ in range(3):
            pub.publish(_image(node, np.zeros((240, 320, 3), np.uint8)))
            spin_until(executor, lambda: False, 0.2)
        status = {kv.key: kv.value for kv in keypoints.diagnostics.status().values}
        assert status['errors.keypoint detection'] == '3' and 'injected failure' in status['errors.last']
        keypoints.detector.detect = detect
        pub.publish(_image(node, np.zeros((240, 320, 3), np.uint8)))
        assert spin_until(executor, lambda: len(out) == 1, 10.0), 'the node stopped working after the exception'


def test_autostart_false_leaves_nodes_unconfigured(ros_context):
    with GraphRun([_keypoints_spec('robot_keypoints_panda.onnx')], context=ros_context, autostart=False) as run:
        assert run.nodes[0].state == 'unconfigured' and run.nodes[0].detector is None


def test_ros2_run_style_process_with_autostart_is_active(ros_node):
    """The node's console-script entry point in its own process: unconfigured by default, active with
    --autostart; this process asks its state through the lifecycle service, as `ros2 lifecycle get` does."""
    node, executor = ros_node
    procs = []
    try:
        for name, extra in (('kp_plain', []), ('kp_auto', ['--autostart'])):
            procs.append(subprocess.Popen(
                [sys.executable, '-m', 'kp_pose_ros.nodes.robot_keypoints', *extra, '--ros-args',
                 '-r', f'__node:={name}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ))
        assert _state(node, executor, '/kp_plain') == 'unconfigured'
        assert spin_until(executor, lambda: _state(node, executor, '/kp_auto') == 'active', 20.0)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def test_readme_parameter_tables_are_those_the_nodes_declare():
    from pathlib import Path

    from kp_pose_ros.cli import parameter_tables

    readme = (Path(__file__).resolve().parents[2] / 'README.md').read_text(encoding='utf-8')
    begin, end = '<!-- kp-pose params: begin -->\n', '<!-- kp-pose params: end -->'
    block = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert block == parameter_tables(), 'README parameter tables are stale: paste `kp-pose params` between the markers'
