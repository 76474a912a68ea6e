"""Instance ids across frames: stable under small motion, new for new objects, expired, reset, no swaps."""
import numpy as np
import pytest

from kp_pose_ros.objects.tracking import InstanceTracker


def test_ids_follow_objects_that_move_a_little():
    tracker = InstanceTracker(max_distance_m=0.05, max_age_s=1.0)
    positions = np.array([[0.0, 0.0, 0.6], [0.2, 0.0, 0.7], [0.0, 0.1, 0.5]])
    ids = tracker.update(0.0, [1, 1, 2], positions)
    assert len(set(ids.tolist())) == 3
    rng = np.random.default_rng(60)
    for step in range(1, 10):
        positions = positions + rng.uniform(-0.01, 0.01, size=(3, 3))
        order = rng.permutation(3)  # detections come in any order
        moved = tracker.update(0.1 * step, np.array([1, 1, 2])[order], positions[order])
        np.testing.assert_array_equal(moved, ids[order])
    assert len(tracker) == 3


def test_a_new_object_gets_a_new_id_and_classes_do_not_mix():
    tracker = InstanceTracker()
    first = tracker.update(0.0, [3], [[0.0, 0.0, 0.5]])
    ids = tracker.update(0.1, [3, 3, 4], [[0.01, 0.0, 0.5], [0.3, 0.0, 0.5], [0.0, 0.0, 0.5]])
    assert ids[0] == first[0]
    assert len({first[0], ids[1], ids[2]}) == 3  # another class at the same place is another object


def test_tracks_expire_after_max_age():
    tracker = InstanceTracker(max_age_s=1.0)
    first = tracker.update(10.0, [0], [[0.0, 0.0, 0.5]])
    assert tracker.update(10.5, [], np.zeros((0, 3))).shape == (0,)  # a frame without it
    assert tracker.update(11.0, [0], [[0.0, 0.0, 0.5]])[0] == first[0]  # seen 1.0 s ago: still alive
    tracker.update(11.5, [], np.zeros((0, 3)))
    later = tracker.update(12.6, [0], [[0.0, 0.0, 0.5]])
    assert later[0] != first[0] and len(tracker) == 1


def test_reset_and_time_going_backwards_forget_tracks_but_never_reuse_ids():
    tracker = InstanceTracker()
    first = tracker.update(5.0, [0], [[0.0, 0.0, 0.5]])
    tracker.set_pose(first[0], np.eye(4))
    looped = tracker.update(1.0, [0], [[0.0, 0.0, 0.5]])  # a bag started over
    assert looped[0] != first[0] and tracker.pose(first[0]) is None
    tracker.reset()
    assert len(tracker) == 0
    again = tracker.update(0.0, [0], [[0.0, 0.0, 0.5]])
    assert again[0] not in (first[0], looped[0])


def test_assignment_prevents_a_swap_greedy_matching_would_make():
    tracker = InstanceTracker(max_distance_m=0.05)
    a, b = tracker.update(0.0, [1, 1], [[0.0, 0.0, 0.6], [0.04, 0.0, 0.6]])
    # Both moved 3.5 cm along x. The first detection is nearest to b, but giving it to b would leave the second,
    # 7.5 cm from a, unmatched; the assignment keeps both.
    ids = tracker.update(0.1, [1, 1], [[0.035, 0.0, 0.6], [0.075, 0.0, 0.6]])
    assert ids.tolist() == [a, b]


def test_detections_without_a_position_get_no_id_and_poses_are_kept_per_track():
    tracker = InstanceTracker()
    ids = tracker.update(0.0, [0, 0], [[np.nan, np.nan, np.nan], [0.0, 0.0, 0.5]])
    assert ids[0] == -1 and ids[1] >= 0 and len(tracker) == 1
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.0, 0.5]
    tracker.set_pose(ids[1], T)
    T[0, 3] = 1.0  # the tracker keeps its own copy
    assert tracker.pose(ids[1])[0, 3] == 0.0
    assert tracker.update(0.1, [0], [[0.005, 0.0, 0.5]])[0] == ids[1]
    assert tracker.pose(ids[1]) is not None  # the last published pose stays the reference
    with pytest.raises(ValueError, match='positions'):
        tracker.update(0.2, [0, 1], [[0.0, 0.0, 0.5]])
