"""Approximate-time synchronizer under jitter, drops, duplicates and reordering; SyncedSubscriber on real rclpy."""
import numpy as np
import pytest
from conftest import spin_until

from kp_pose_ros.core.sync import ApproximateTimeSynchronizer

MS = 1_000_000
PERIOD = 33_333_333  # 30 Hz camera
SLOP = 15 * MS


def simulate(rng, frames=300, inputs=3, jitter=5 * MS, drop=0.2, latency=(0, 15 * MS, 40 * MS), duplicate=0.0):
    """Messages (arrival, input, stamp, item) of `inputs` streams of one camera, sorted by arrival time.

    Returns them with the set of frames for which every input produced a message.
    """
    messages, present = [], {i: set() for i in range(inputs)}
    for k in range(frames):
        t = 1_000_000_000 + k * PERIOD
        for i in range(inputs):
            if rng.random() < drop:
                continue
            stamp = t + int(rng.integers(-jitter, jitter + 1))
            arrival = t + latency[i] + int(rng.integers(0, 10 * MS))
            messages.append((arrival, i, stamp, (i, k, 0)))
            present[i].add(k)
            if rng.random() < duplicate:
                messages.append((arrival + int(rng.integers(0, 3 * PERIOD)), i, stamp, (i, k, 1)))
    messages.sort(key=lambda m: m[0])
    return messages, set.intersection(*present.values())


def run(sync, messages):
    """Feed messages in order; items carry their stamp so the checks can see it."""
    sets = []
    for _, i, stamp, item in messages:
        sets += sync.add(i, stamp, (stamp, item))
    return sets


def check_invariants(sets, inputs, slop=SLOP):
    """Within slop, strictly increasing on every input, one item per input in order, each message used once."""
    used = set()
    last = [float('-inf')] * inputs
    for s in sets:
        assert len(s) == inputs
        stamps = [stamp for stamp, _ in s]
        assert max(stamps) - min(stamps) <= slop
        for i, (stamp, item) in enumerate(s):
            assert item[0] == i  # in input order
            assert stamp > last[i]
            last[i] = stamp
            assert (i, stamp) not in used
            used.add((i, stamp))


def emitted_frames(sets):
    frames = set()
    for s in sets:
        ks = {item[1] for _, item in s}
        assert len(ks) == 1, f'a set mixes frames {ks}'
        frames |= ks
    return frames


@pytest.mark.parametrize('seed', range(5))
def test_jitter_and_drops_match_exactly_the_complete_frames(seed):
    rng = np.random.default_rng(seed)
    messages, complete = simulate(rng)
    sync = ApproximateTimeSynchronizer(3, SLOP, queue_size=10)
    sets = run(sync, messages)
    check_invariants(sets, 3)
    assert len(sets) == len(complete)
    assert emitted_frames(sets) == complete
    assert len(messages) == 3 * len(sets) + sync.dropped + sync.queued


def test_duplicates_are_used_once_and_counted():
    rng = np.random.default_rng(7)
    messages, complete = simulate(rng, duplicate=0.15)
    sync = ApproximateTimeSynchronizer(3, SLOP, queue_size=10)
    sets = run(sync, messages)
    check_invariants(sets, 3)
    assert emitted_frames(sets) == complete
    assert all(item[2] == 0 for s in sets for _, item in s)  # the first copy wins
    duplicates = sum(1 for m in messages if m[3][2] == 1)
    assert duplicates > 0
    assert sync.dropped >= duplicates
    assert len(messages) == 3 * len(sets) + sync.dropped + sync.queued


def test_reordering_within_a_queue_is_absorbed_while_the_set_is_undecided():
    # Input 0 delivers frames pairwise swapped (k+1 before k); input 2 lags by 3 frames, so every set is still
    # open when input 0's late message arrives, and nothing may be lost.
    messages = []
    for k in range(60):
        t = k * PERIOD
        swapped = k + 1 if k % 2 == 0 else k - 1
        messages.append((swapped * PERIOD + MS, 0, t, (0, k, 0)))
        messages.append((t + 2 * MS, 1, t + MS, (1, k, 0)))
        messages.append((t + 3 * PERIOD, 2, t - MS, (2, k, 0)))
    messages.sort(key=lambda m: m[0])
    sync = ApproximateTimeSynchronizer(3, SLOP, queue_size=10)
    sets = run(sync, messages)
    check_invariants(sets, 3)
    assert emitted_frames(sets) == set(range(60))
    assert sync.dropped == 0


@pytest.mark.parametrize('seed', range(3))
def test_arbitrary_arrival_order_keeps_invariants(seed):
    rng = np.random.default_rng(100 + seed)
    messages, complete = simulate(rng, frames=200, duplicate=0.1)
    order = rng.permutation(len(messages))
    shuffled = [messages[j] for j in order]
    sync = ApproximateTimeSynchronizer(3, SLOP, queue_size=8)
    sets = run(sync, shuffled)
    check_invariants(sets, 3)
    assert emitted_frames(sets) <= complete  # never a set that mixes frames or invents one
    assert len(shuffled) == 3 * len(sets) + sync.dropped + sync.queued


def test_emits_on_arrival_of_the_last_member():
    sync = ApproximateTimeSynchronizer(2, SLOP, queue_size=5)
    assert sync.add(0, 100 * MS, 'color') == []
    assert sync.add(1, 104 * MS, 'depth') == [('color', 'depth')]
    assert sync.queued == 0 and sync.dropped == 0
    assert sync.add(1, 90 * MS, 'late depth') == []  # older than the emitted set
    assert sync.dropped == 1


def test_queue_is_bounded_and_keeps_the_newest():
    sync = ApproximateTimeSynchronizer(2, SLOP, queue_size=5)
    for k in range(20):
        assert sync.add(0, k * PERIOD, k) == []
    assert sync.queued == 5 and sync.dropped == 15
    assert sync.add(1, 19 * PERIOD + MS, 'info') == [(19, 'info')]
    assert sync.dropped == 19  # frames 15..18 can no longer be matched


def test_single_input_passes_through():
    sync = ApproximateTimeSynchronizer(1, 0, queue_size=1)
    assert sync.add(0, 5, 'a') == [('a',)]


@pytest.mark.parametrize('args, error, message', [
    ((0, SLOP, 5), ValueError, 'num_inputs'),
    ((2, -1, 5), ValueError, 'slop_ns'),
    ((2, SLOP, 0), ValueError, 'queue_size'),
])
def test_bad_construction(args, error, message):
    with pytest.raises(error, match=message):
        ApproximateTimeSynchronizer(*args)


def test_bad_add():
    sync = ApproximateTimeSynchronizer(2, SLOP, 5)
    with pytest.raises(IndexError, match='out of range'):
        sync.add(2, 0, 'x')
    with pytest.raises(TypeError):
        sync.add(0, 1.5, 'x')  # float stamps would lose nanoseconds: refuse


def test_synced_subscriber_matches_image_and_camera_info(ros_node):
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from kp_pose_ros.ros.stamps import ns_to_stamp
    from kp_pose_ros.ros.sync import SyncedSubscriber

    node, executor = ros_node
    got = []
    synced = SyncedSubscriber(node, [(Image, 'cam/image'), (CameraInfo, 'cam/info')],
                              lambda img, info: got.append((img, info)), slop_s=0.01, queue_size=10, qos=20)
    image_pub = node.create_publisher(Image, 'cam/image', 20)
    info_pub = node.create_publisher(CameraInfo, 'cam/info', 20)
    assert spin_until(executor, lambda: image_pub.get_subscription_count() and info_pub.get_subscription_count(), 5)

    base = 1_000_000_000
    for k in range(6):
        stamp = base + k * PERIOD
        image = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12))
        image.header.stamp = ns_to_stamp(stamp)
        image_pub.publish(image)
        if k != 3:  # camera_info of frame 3 is lost
            info = CameraInfo(height=2, width=2)
            info.header.stamp = ns_to_stamp(stamp + 2 * MS)
            info_pub.publish(info)

    assert spin_until(executor, lambda: len(got) == 5, 5)
    spin_until(executor, lambda: False, 0.2)  # nothing more may arrive
    assert len(got) == 5
    assert [img.header.stamp.nanosec for img, _ in got] == [(k * PERIOD) % 1_000_000_000 for k in (0, 1, 2, 4, 5)]
    for img, info in got:
        assert isinstance(img, Image) and isinstance(info, CameraInfo)
        assert info.header.stamp.nanosec - img.header.stamp.nanosec == 2 * MS
    assert synced.dropped == 1

    with pytest.raises(TypeError, match='no header'):
        SyncedSubscriber(node, [(String, 'x'), (Image, 'y')], lambda *m: None)
