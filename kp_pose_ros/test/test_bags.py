"""Bag replay and recording (kp_pose_ros.ros.bags, `kp-pose play` / `kp-pose record`) on a real RealSense D435 bag:
real rclpy, real nodes, bytes and header stamps compared with the bag read back through rosbags."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import spin_until

REPO = Path(__file__).resolve().parents[2]
BAG = REPO.parent / 'shared' / 'data' / 'realsense_d435' / 'rosbag2_cube_10frames'
COLOR, COLOR_INFO = '/camera/color/image_raw', '/camera/color/camera_info'
DEPTH, DEPTH_INFO = '/camera/depth/image_rect_raw', '/camera/depth/camera_info'
TIMED = (COLOR, COLOR_INFO, DEPTH, DEPTH_INFO)
BAG_SPAN_S = 0.3  # 10 frames at 30 Hz

pytestmark = pytest.mark.skipif(not BAG.is_dir(), reason=f'real D435 bag not found at {BAG} (../shared/data is only '
                                                         'on the development machines)')


@pytest.fixture(scope='module')
def bag():
    """{topic: [(raw CDR bytes, header stamp in ns or None)]} of the bag, read with rosbags."""
    from rosbags.highlevel import AnyReader

    out = {}
    with AnyReader([BAG]) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec if hasattr(msg, 'header') else None
            out.setdefault(conn.topic, []).append((bytes(raw), stamp))
    return out


def same_cdr(got: list[bytes], expected: list[bytes]) -> bool:
    """Byte-identical serialised messages, up to the zero padding to a 4-byte multiple that a DDS transport may
    append (the bag's 381-byte CameraInfo arrives as 384 bytes from another process)."""
    return len(got) == len(expected) and all(
        a == b or (len(a) == len(b) + (-len(b) % 4) and a.startswith(b) and not a[len(b):].strip(b'\0'))
        for a, b in zip(got, expected))


def _stamp_ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


class Playback:
    """A BagPlayer on its own node in the test's context, run in a thread while the test spins its executor."""

    def __init__(self, context, **options):
        import rclpy

        from kp_pose_ros.ros.bags import BagPlayer

        self.node = rclpy.create_node('bag_player', context=context)
        self.player = BagPlayer(self.node, BAG, **options)
        self.stats = None
        self.thread = None

    def start(self, wait_for=(), **run_options):
        pubs = [o.publisher for o in self.player.outputs.values() if o.topic in wait_for]
        deadline = time.monotonic() + 5.0
        while not all(p.get_subscription_count() for p in pubs) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.thread = threading.Thread(target=lambda: setattr(self, 'stats', self.player.run(**run_options)))
        self.thread.start()
        return self

    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def close(self):
        if self.thread is not None:
            self.thread.join(10.0)
        self.player.close()
        self.node.destroy_node()


@pytest.fixture
def playback(ros_node):
    made = []

    def make(**options):
        made.append(Playback(ros_node[0].context, **options))
        return made[-1]
    yield make
    for p in made:
        p.close()


def _reliable(depth=50):
    from kp_pose_ros.ros.qos import qos_profile
    return qos_profile('reliable', depth)


def test_replay_delivers_images_camera_info_and_static_tf_intact(ros_node, playback, bag):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from kp_pose_ros.ros.qos import LATCHED_QOS

    node, executor = ros_node
    got = {t: [] for t in TIMED}
    for topic in TIMED:
        node.create_subscription(Image if 'image' in topic else CameraInfo, topic,
                                 lambda data, t=topic: got[t].append(data), _reliable(), raw=True)
    play = playback().start(wait_for=TIMED)
    assert spin_until(executor, lambda: play.done() and all(len(got[t]) == 10 for t in TIMED), 10.0), \
        {t: len(v) for t, v in got.items()}
    # Every message byte-identical to the bag's (so header stamps, encodings, sizes, pixels and K too).
    for topic in TIMED:
        assert same_cdr(got[topic], [raw for raw, _ in bag[topic]]), topic
    colour = [deserialize_message(d, Image) for d in got[COLOR]]
    depth = [deserialize_message(d, Image) for d in got[DEPTH]]
    assert {(m.encoding, m.width, m.height, m.step) for m in colour} == {('rgb8', 640, 480, 640 * 3)}
    assert {(m.encoding, m.width, m.height, m.step) for m in depth} == {('16UC1', 640, 480, 640 * 2)}
    assert [_stamp_ns(m.header.stamp) for m in colour] == [s for _, s in bag[COLOR]]
    assert all(len(m.data) == 640 * 480 * 3 for m in colour)
    info = deserialize_message(got[COLOR_INFO][0], CameraInfo)
    assert info.k[0] == pytest.approx(614.9617, abs=1e-4) and info.k[4] == pytest.approx(614.9281, abs=1e-4)
    assert info.k[2] == pytest.approx(320.1971, abs=1e-4) and info.k[5] == pytest.approx(241.4554, abs=1e-4)
    dinfo = deserialize_message(got[DEPTH_INFO][0], CameraInfo)
    assert dinfo.k[0] == pytest.approx(383.97, abs=0.01) and dinfo.k[2] == pytest.approx(320.5035, abs=1e-4)
    # The bag's spacing kept (its /tf_static, logged at t=0, does not delay the 2020-stamped stream).
    assert BAG_SPAN_S - 0.02 < play.stats.wall_s < BAG_SPAN_S + 0.5
    assert play.stats.counts == {**{t: 10 for t in TIMED}, '/tf_static': 1}

    # /tf_static is latched: a subscriber that joins after the playback still gets the depth <- colour transform.
    static = []
    node.create_subscription(TFMessage, '/tf_static', static.append, LATCHED_QOS)
    assert spin_until(executor, lambda: static, 5.0)
    (tf,) = static[0].transforms
    assert (tf.header.frame_id, tf.child_frame_id) == ('camera_depth_optical_frame', 'camera_color_optical_frame')
    assert static[0] == deserialize_message(bag['/tf_static'][0][0], TFMessage)
    assert tf.transform.translation.x == pytest.approx(-0.01484097075)


def test_robot_keypoints_node_keypoints_carry_the_bag_stamps(ros_node, playback, bag):
    """The suite's real keypoint node fed by the replay: one KeypointArray per colour frame, stamped as the bag."""
    from kp_pose_msgs.msg import KeypointArray
    from kp_pose_ros.graphs.runner import GraphRun
    from kp_pose_ros.graphs.spec import NodeSpec

    node, executor = ros_node
    keypoints = []
    node.create_subscription(KeypointArray, '/robot_keypoints/keypoints_2d', keypoints.append, 20)
    spec = NodeSpec(name='robot_keypoints', executable='robot_keypoints',
                    node_class='kp_pose_ros.nodes.robot_keypoints:RobotKeypointsNode',
                    # The bag's stamps are from 2020: age checks off; reliable like the RealSense driver.
                    parameters={'max_image_age_s': 0.0, 'qos.reliability': 'reliable', 'qos.depth': 10},
                    remappings=[('image', COLOR), ('keypoints_2d', '/robot_keypoints/keypoints_2d')])
    with GraphRun([spec], context=node.context) as run:
        executor.add_node(run.nodes[0])
        try:
            play = playback(topics=[COLOR]).start(wait_for=[COLOR])
            ok = spin_until(executor, lambda: play.done() and len(keypoints) == 10, 15.0)
        finally:
            executor.remove_node(run.nodes[0])
    assert ok, f'{len(keypoints)} keypoint messages'
    assert [_stamp_ns(k.header.stamp) for k in keypoints] == [s for _, s in bag[COLOR]]
    assert {k.header.frame_id for k in keypoints} == {'camera_color_optical_frame'}
    assert all(len(k.instances) == 1 and len(k.instances[0].keypoints_2d) > 0 for k in keypoints)


@pytest.mark.parametrize('storage, suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_record_a_replay_round_trips_bytes_and_stamps(ros_node, playback, bag, tmp_path, storage, suffix):
    from rosbags.highlevel import AnyReader

    from kp_pose_ros.ros.bags import BagRecorder

    node, executor = ros_node
    play = playback()
    out = tmp_path / 'rec'
    topics = [*TIMED, '/tf_static']
    with BagRecorder(node, out, topics, storage=storage) as recorder:
        assert spin_until(executor, lambda: not recorder.pending, 5.0)
        play.start(wait_for=topics)
        assert spin_until(executor, lambda: play.done() and sum(recorder.counts.values()) == 41, 10.0), \
            recorder.counts
        stats = recorder.close()
    assert stats.counts == {**{t: 10 for t in TIMED}, '/tf_static': 1} and not stats.missing
    assert list(out.glob(f'*{suffix}')) and (out / 'metadata.yaml').is_file()
    with AnyReader([out]) as reader:
        recorded = {}
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            recorded.setdefault(conn.topic, []).append(bytes(raw))
            assert log_ns > 1_700_000_000 * 10**9  # receive time, not the bag's 2020 stamps
            if hasattr(msg, 'header'):
                assert msg.header.stamp.sec == 1_600_000_000
        types = {c.topic: c.msgtype for c in reader.connections}
        latched = [q.durability.name for c in reader.connections if c.topic == '/tf_static'
                   for q in c.ext.offered_qos_profiles]
    assert types[COLOR] == 'sensor_msgs/msg/Image' and types['/tf_static'] == 'tf2_msgs/msg/TFMessage'
    assert latched == ['TRANSIENT_LOCAL']
    for topic in TIMED:
        assert same_cdr(recorded[topic], [raw for raw, _ in bag[topic]]), topic
    assert same_cdr(recorded['/tf_static'], [bag['/tf_static'][0][0]])


def test_rate_scales_replay_time_and_clock_follows_bag_time(ros_node, playback, bag):
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo

    node, executor = ros_node
    clock = []
    node.create_subscription(Clock, '/clock', clock.append, _reliable(100))
    node.create_subscription(CameraInfo, COLOR_INFO, lambda _: None, _reliable())
    play = playback(topics=[COLOR_INFO], rate=2.0, clock_hz=100.0).start(wait_for=[COLOR_INFO])
    assert spin_until(executor, lambda: play.done(), 5.0)
    spin_until(executor, lambda: False, 0.2)
    assert BAG_SPAN_S / 2 - 0.02 < play.stats.wall_s < BAG_SPAN_S - 0.02, play.stats.wall_s
    first, last = bag[COLOR_INFO][0][1], bag[COLOR_INFO][-1][1]
    times = [_stamp_ns(c.clock) for c in clock]
    assert len(times) >= 8 and times == sorted(times)
    assert first <= times[0] and times[-1] <= last + 10**8

    play1 = playback(topics=[COLOR_INFO]).start()
    play1.thread.join(5.0)
    assert BAG_SPAN_S - 0.02 < play1.stats.wall_s < BAG_SPAN_S + 0.3
    assert play1.stats.wall_s > 1.6 * play.stats.wall_s


def test_remap_topic_selection_and_bounded_loop(ros_node, playback, bag):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    node, executor = ros_node
    images, infos = [], []
    node.create_subscription(Image, '/replay/image', images.append, _reliable())
    node.create_subscription(CameraInfo, COLOR_INFO, infos.append, _reliable())
    play = playback(topics=[COLOR], remaps=[f'{COLOR}:=/replay/image'], loop=True, rate=3.0)
    assert play.player.topics == ['/replay/image'] and node.count_publishers(COLOR) == 0
    play.start(wait_for=['/replay/image'], max_loops=3)
    assert spin_until(executor, lambda: play.done() and len(images) == 30, 10.0), len(images)
    assert play.stats.loops == 3 and not infos
    expected = [deserialize_message(raw, Image) for raw, _ in bag[COLOR]]
    assert images == expected * 3

    # A loop bounded by a duration instead: about 0.5 s of 0.1 s passes.
    timed = playback(topics=[COLOR_INFO], loop=True, rate=3.0).start(duration=0.5)
    timed.thread.join(5.0)
    assert timed.stats.loops >= 3 and not timed.stats.interrupted and 0.5 <= timed.stats.wall_s < 1.0

    # /tf_static alone (a camera bringup's latched transforms before the stream): that and nothing else.
    static = playback(topics=['/tf_static']).start()
    static.thread.join(5.0)
    assert static.stats.counts == {'/tf_static': 1} and static.stats.wall_s < 1.0


def test_field_by_field_conversion_matches_the_bytes(ros_node, playback, bag):
    """The path taken when the bag's definitions differ from the installed ones: rosbags message -> rclpy class."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    node, executor = ros_node
    got = {DEPTH: [], DEPTH_INFO: []}
    node.create_subscription(Image, DEPTH, got[DEPTH].append, _reliable())
    node.create_subscription(CameraInfo, DEPTH_INFO, got[DEPTH_INFO].append, _reliable())
    play = playback(topics=[DEPTH, DEPTH_INFO], convert=True, rate=3.0)
    assert not any(o.raw for o in play.player.outputs.values())
    play.start(wait_for=[DEPTH, DEPTH_INFO])
    assert spin_until(executor, lambda: play.done() and all(len(v) == 10 for v in got.values()), 10.0)
    assert got[DEPTH] == [deserialize_message(raw, Image) for raw, _ in bag[DEPTH]]
    assert got[DEPTH_INFO] == [deserialize_message(raw, CameraInfo) for raw, _ in bag[DEPTH_INFO]]


def test_cli_record_closes_cleanly_on_ctrl_c_and_play_prints_a_summary(tmp_path, capsys):
    """`kp-pose record` in its own process, `kp-pose play` in this one; SIGINT ends the recording with a valid bag."""
    from rosbags.highlevel import AnyReader

    from kp_pose_ros.cli import main

    out = tmp_path / 'cli_rec'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    rec = subprocess.Popen([sys.executable, '-m', 'kp_pose_ros.cli', 'record', str(out), COLOR_INFO,
                            '--storage', 'sqlite3'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env)
    try:
        rc = main(['play', str(BAG), '--topics', COLOR_INFO, '--rate', '3', '--wait', '15'])
        summary = capsys.readouterr().out.strip().splitlines()[-1]
        time.sleep(0.3)
    finally:
        rec.send_signal(signal.SIGINT)
        log = rec.communicate(timeout=30)[0]
    assert rc == 0
    assert summary.startswith('kp-pose play: 10 messages in ') and f'{COLOR_INFO} 10' in summary, summary
    assert rec.returncode == 0, log
    assert 'kp-pose record: 10 messages' in log, log
    with AnyReader([out]) as reader:
        assert reader.message_count == 10
        assert same_cdr([bytes(raw) for _, _, raw in reader.messages()], [raw for raw, _ in _bag_topic(COLOR_INFO)])


def _bag_topic(topic):
    from rosbags.highlevel import AnyReader

    with AnyReader([BAG]) as reader:
        return [(bytes(raw), t) for c, t, raw in reader.messages() if c.topic == topic]
