"""Object metrics (objects.metrics) on cases worked out by hand: ADD / ADD-S, the 0.1d accuracy, box IoU, greedy
detection matching and all-point AP."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_pose_ros.objects.metrics import (
    add_accuracy,
    add_error,
    adds_error,
    average_precision,
    box_iou,
    match_detections,
    pose_error,
)

# The corners of a 0.2 x 0.1 rectangle: symmetric under 180 degrees about z.
RECTANGLE = np.array([[0.1, 0.05, 0.0], [-0.1, 0.05, 0.0], [-0.1, -0.05, 0.0], [0.1, -0.05, 0.0]])


def pose(rotvec=(0.0, 0.0, 0.0), t=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def test_add_of_a_translation_is_its_length():
    T_gt = pose((0.3, -0.2, 1.0), (0.1, 0.2, 0.5))
    T_est = T_gt.copy()
    T_est[:3, 3] += [0.003, 0.0, 0.004]
    assert add_error(RECTANGLE, T_est, T_gt) == pytest.approx(0.005)
    assert adds_error(RECTANGLE, T_gt, T_gt) == 0.0


def test_symmetry_fools_add_not_adds():
    T_gt = pose((0.0, 0.4, 0.0), (0.0, 0.0, 0.8))
    T_est = T_gt @ pose((0.0, 0.0, np.pi))  # the rectangle turned onto itself
    assert add_error(RECTANGLE, T_est, T_gt) == pytest.approx(np.hypot(0.2, 0.1))  # each corner to the opposite
    assert adds_error(RECTANGLE, T_est, T_gt) == pytest.approx(0.0, abs=1e-12)
    assert pose_error(RECTANGLE, T_est, T_gt, symmetric=True) == pytest.approx(0.0, abs=1e-12)
    assert pose_error(RECTANGLE, T_est, T_gt, symmetric=False) == pytest.approx(np.hypot(0.2, 0.1))


def test_adds_is_the_mean_closest_point_distance():
    # turned 90 degrees, corner (0.1, 0.05) goes to (-0.05, 0.1): its closest true corner is (-0.1, 0.05)
    T_est = pose((0.0, 0.0, np.pi / 2))
    assert adds_error(RECTANGLE, T_est, np.eye(4)) == pytest.approx(np.hypot(0.05, 0.05))
    with pytest.raises(ValueError, match=r'\(N, 3\)'):
        add_error(RECTANGLE[:, :2], T_est, np.eye(4))


def test_add_accuracy():
    errors = [0.005, 0.02, np.nan, np.inf, 0.009]
    assert add_accuracy(errors, 0.1) == pytest.approx(0.4)
    assert add_accuracy(errors, [0.1, 0.3, 0.1, 0.1, 0.05]) == pytest.approx(0.4)  # 0.02 < 0.03, 0.009 > 0.005
    assert add_accuracy(errors, 0.1, fraction=0.5) == pytest.approx(0.6)
    assert np.isnan(add_accuracy([], 0.1))


def test_box_iou_by_hand():
    a = [[0, 0, 2, 2], [10, 10, 11, 11]]
    b = [[1, 1, 3, 3], [0, 0, 2, 2], [0, 0, 1, 4], [5, 5, 5, 6]]
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1 / 7, 1.0, 2 / 6, 0.0])
    np.testing.assert_allclose(iou[1], 0.0)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_matching_by_hand():
    gt_boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]]
    gt_classes = [0, 0, 1]
    pred_boxes = [[0, 0, 10, 10],     # class 0, on gt 0: TP
                  [1, 0, 11, 10],     # class 0, second on gt 0 (IoU 0.82): FP, a duplicate
                  [0, 20, 10, 30],    # class 0 on the class-1 box: FP
                  [40, 40, 50, 50]]   # class 1, nowhere: FP
    scores = [0.9, 0.8, 0.7, 0.6]
    pred_classes = [0, 0, 0, 1]
    assert match_detections(pred_boxes, scores, pred_classes, gt_boxes, gt_classes) == (1, 3, 2)
    assert match_detections(np.zeros((0, 4)), [], [], gt_boxes, gt_classes) == (0, 0, 3)
    assert match_detections(pred_boxes, scores, pred_classes, np.zeros((0, 4)), []) == (0, 4, 0)


def test_matching_is_greedy_by_score():
    """The higher-scored box takes the ground truth even though the other overlaps it more; the threshold counts."""
    gt = [[0, 0, 10, 10]]
    pred = [[0, 0, 10, 10], [0, 0, 10, 8]]
    assert match_detections(pred, [0.3, 0.6], [5, 5], gt, [5]) == (1, 1, 0)
    assert match_detections([[0, 0, 10, 4]], [0.6], [5], gt, [5]) == (0, 1, 1)  # IoU 0.4
    assert match_detections([[0, 0, 10, 4]], [0.6], [5], gt, [5], iou_threshold=0.4) == (1, 0, 0)
    with pytest.raises(ValueError, match='scores'):
        match_detections(pred, [0.3], [5, 5], gt, [5])


def test_average_precision_by_hand():
    # class 0: two ground truths in two images; detections by score: TP (0.9), FP (0.8), TP (0.7)
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: envelope 1, 2/3, 2/3 -> AP = 1/2 * 1 + 1/2 * 2/3
    box = [0, 0, 10, 10]
    images = [([box, [50, 50, 60, 60]], [0.9, 0.8], [0, 0], [box], [0]),
              ([box, [0, 0, 10, 10]], [0.7, 0.95], [0, 1], [box, [100, 100, 110, 110]], [0, 2])]
    ap = average_precision(images)
    assert set(ap) == {0, 2}  # class 1 has no ground truth; class 2 has one, never found
    assert ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert ap[2] == 0.0
    perfect = [([box], [0.5], [3], [box], [3]), ([box], [0.9], [3], [box], [3])]
    assert average_precision(perfect) == {3: pytest.approx(1.0)}
    assert average_precision([]) == {}
