"""KeypointArray <-> arrays match keypoints by name: producers and consumers never depend on each other's order."""
import numpy as np

from kp_pose_msgs.msg import KeypointInstance
from kp_pose_ros.ros.keypoint_msgs import instance_2d, instance_3d, keypoints_2d, keypoints_3d


def test_round_trip_reordered_and_missing():
    names = ['a', 'b', 'c']
    px = np.array([[1.0, 2.0], [np.nan, np.nan], [5.0, 6.0]])
    pts = np.array([[0.1, 0.2, 1.0], [np.nan] * 3, [0.3, 0.4, 2.0]])
    inst = KeypointInstance(keypoints_2d=keypoints_2d(names, px, np.array([0.9, 0.8, 0.7])),
                            keypoints_3d=keypoints_3d(names, pts, np.array([1.0, 1.0, 0.5])))
    # Compared as float32, the field's type: numpy < 2 compares np.float32(0.9) with the float 0.9 in float64 (unequal).
    scores = np.array([k.score for k in inst.keypoints_2d], dtype=np.float32)
    np.testing.assert_array_equal(scores, np.array([0.9, 0.0, 0.7], dtype=np.float32))  # NaN -> not detected
    assert [k.name for k in inst.keypoints_3d] == ['a', 'c']  # non-finite 3D points are left out
    got_px, got_score = instance_2d(inst, ['c', 'a', 'z'])
    np.testing.assert_allclose(got_px[:2], [[5.0, 6.0], [1.0, 2.0]])
    assert np.all(np.isnan(got_px[2])) and got_score[2] == 0.0
    got_pts, got_score3 = instance_3d(inst, ['b', 'c'])
    assert np.all(np.isnan(got_pts[0])) and got_score3[0] == 0.0
    np.testing.assert_allclose(got_pts[1], [0.3, 0.4, 2.0])
    assert got_score3[1] == np.float32(0.5)
