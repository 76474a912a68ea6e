"""Shared fixtures: a real rclpy context per test, isolated on its own DDS domain."""
import os
import signal

import pytest

# One DDS domain per test session, shared with any subprocess a test starts, so concurrent runs on one machine
# (CI beside a developer's shell) never see each other's topics. Domains 0-101 are valid on Linux.
os.environ.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 90))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

# A run started in the background of a non-interactive shell (a CI script, `nohup ... &`) inherits SIGINT ignored,
# and so would every node process a test starts and then stops with SIGINT, as launch stops them: the node never
# stops. A handled signal goes back to its default across exec, so handling it here gives the children theirs.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def ros_context():
    """An initialised rclpy context, always shut down, so a failing test never leaks into the next."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture
def ros_node(ros_context):
    """A plain node plus a single-threaded executor on the test's context, destroyed after the test."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node('kp_pose_test', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()


def spin_until(executor, predicate, timeout_s=10.0):
    """Spin until predicate() is true or the timeout passes; returns the predicate's last value."""
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def call_service(node, executor, srv_type, service, **fields):
    """Call `service` from `node` (spinning `executor`) with a request made of `fields`; its response."""
    client = node.create_client(srv_type, service)
    try:
        assert spin_until(executor, client.service_is_ready, 10.0), f"{service} not available"
        future = client.call_async(srv_type.Request(**fields))
        assert spin_until(executor, future.done, 10.0), f"{service} did not answer"
        return future.result()
    finally:
        node.destroy_client(client)


def random_sim_frames(config, seed: int, count: int) -> list:
    """`count` renders of a synthetic scene, each with a new collision-free arm pose, camera pose and appearance."""
    from kp_pose_ros.sim.scene import SimScene

    with SimScene(config, seed=seed) as scene:
        frames = []
        for _ in range(count):
            scene.set_joint_positions(scene.sample_joint_positions())
            scene.randomize_camera()
            scene.randomize_appearance()
            frames.append(scene.render())
        return frames


def spin_graph(node, executor, specs, predicate, timeout_s):
    """Start the graph's nodes in ``node``'s context, spin them beside it until ``predicate`` holds, stop them;
    returns whether it held in time."""
    from kp_pose_ros.graphs.runner import GraphRun

    with GraphRun(specs, context=node.context) as run:
        for n in run.nodes:
            executor.add_node(n)
        try:
            return spin_until(executor, predicate, timeout_s)
        finally:
            for n in run.nodes:
                executor.remove_node(n)


@pytest.fixture(scope='session')
def panda():
    """(kinematics, surface model) of pybullet's Panda with the DREAM keypoints, 3000 surface points: the robot
    the depth-fitting tests align."""
    import pybullet_data

    from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS, RobotKinematics
    from kp_pose_ros.robot.surface import sample_robot_surface
    from kp_pose_ros.robot.urdf import parse_urdf

    urdf = os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')
    with open(urdf, encoding='utf-8') as stream:
        text = stream.read()
    kin = RobotKinematics(parse_urdf(text), 'panda_link0', PANDA_KEYPOINT_LINKS)
    return kin, sample_robot_surface(text, kin.link_names, os.path.dirname(urdf), num_points=3000)
