"""vision_msgs Detection2DArray / Detection3DArray <-> arrays, so the object nodes and any consumer agree on one
convention: the class name (e.g. 'obj_000005') in results[0].hypothesis.class_id, boxes in image pixels (centre and
size of the xyxy box), 3D poses camera <- object in the header's frame."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
)

from kp_pose_ros.core.transforms import make_transform
from kp_pose_ros.ros.poses import matrix_from_pose, pose_from_matrix


def bbox_2d(box) -> BoundingBox2D:
    """The BoundingBox2D of an xyxy box in pixels."""
    x1, y1, x2, y2 = map(float, box)
    bbox = BoundingBox2D(size_x=x2 - x1, size_y=y2 - y1)
    bbox.center.position.x, bbox.center.position.y = (x1 + x2) / 2, (y1 + y2) / 2
    return bbox


def bbox_xyxy(bbox: BoundingBox2D) -> np.ndarray:
    """The xyxy box (pixels) of a BoundingBox2D."""
    c, half = bbox.center.position, np.array([bbox.size_x, bbox.size_y]) / 2
    return np.array([c.x - half[0], c.y - half[1], c.x + half[0], c.y + half[1]])


def detection_2d_array(header: Header, boxes: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> Detection2DArray:
    """One Detection2D per box (xyxy pixels), class name and score as its only hypothesis."""
    return Detection2DArray(header=header, detections=[
        Detection2D(header=header, bbox=bbox_2d(box), results=[ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=str(name), score=float(score)))])
        for box, score, name in zip(boxes, scores, names)])


def detections_from_msg(msg: Detection2DArray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class names, xyxy boxes (N, 4), scores (N,)) of the detections, each by its best hypothesis; a detection
    without any hypothesis has class '' and score 0."""
    names, boxes, scores = [], np.zeros((len(msg.detections), 4)), np.zeros(len(msg.detections))
    for i, det in enumerate(msg.detections):
        best = max(det.results, key=lambda r: r.hypothesis.score, default=None)
        names.append(best.hypothesis.class_id if best is not None else '')
        scores[i] = best.hypothesis.score if best is not None else 0.0
        boxes[i] = bbox_xyxy(det.bbox)
    return names, boxes, scores


def detection_3d(header: Header, name: str, score: float, T_cam_obj: np.ndarray, detection_id: str,
                 box_min_m: np.ndarray | None = None, box_size_m: np.ndarray | None = None) -> Detection3D:
    """A Detection3D: the object's pose as its hypothesis' pose, the model box (model frame min corner and size,
    metres) as bbox; without a box, bbox is centred on the object's origin with zero size."""
    det = Detection3D(header=header, id=detection_id)
    hypothesis = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=name, score=float(score)))
    hypothesis.pose.pose = pose_from_matrix(T_cam_obj)
    det.results = [hypothesis]
    T_centre = T_cam_obj
    if box_size_m is not None:
        T_centre = T_cam_obj @ make_transform(np.eye(3), np.asarray(box_min_m) + np.asarray(box_size_m) / 2)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = map(float, box_size_m)
    det.bbox.center = pose_from_matrix(T_centre)
    return det


def detections_3d_from_msg(msg: Detection3DArray) -> list[tuple[str, float, np.ndarray]]:
    """(class name, score, T_cam_obj (4, 4)) of each detection, by its best hypothesis; detections without one are
    left out."""
    out = []
    for det in msg.detections:
        best = max(det.results, key=lambda r: r.hypothesis.score, default=None)
        if best is not None:
            out.append((best.hypothesis.class_id, float(best.hypothesis.score), matrix_from_pose(best.pose.pose)))
    return out
