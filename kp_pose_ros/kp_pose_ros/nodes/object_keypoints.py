"""2D object keypoints on detection crops (heatmap network through ONNX Runtime): the second stage of object_pose.

Each detection set is paired with its image by stamp; all crops of a frame go through the network in one batch."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from kp_pose_msgs.msg import KeypointArray, KeypointInstance
from kp_pose_ros.objects.keypoint_model import ObjectKeypointModel
from kp_pose_ros.ros.detections import bbox_2d, detections_from_msg
from kp_pose_ros.ros.images import fresh_rgb8
from kp_pose_ros.ros.keypoint_msgs import keypoints_2d, object_keypoint_names
from kp_pose_ros.ros.lifecycle_node import PipelineNode
from kp_pose_ros.ros.models import inference_params, load_model
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.qos import KEYPOINT_QUEUE, qos_profile, sensor_qos_params
from kp_pose_ros.ros.sync import SyncedSubscriber


class ObjectKeypointsNode(PipelineNode):
    PARAMS = (
        Param('model', 'lmo_keypoints.onnx', 'Object keypoint heatmap model: a file in the package models/ or a path; '
              'its manifest names the objects and their 3D keypoints.'),
        *inference_params(),
        Param('sync_slop_s', 0.0, 'How far apart an image and its detections may be stamped (the detector stamps '
              'its output with the image\'s own stamp).', min_value=0.0, max_value=0.1),
        Param('sync_queue_size', 30, 'Images kept waiting for their detections (30: 1 s at 30 Hz, more than the '
              'detector takes on a CPU).', min_value=1, max_value=100),
        *sensor_qos_params(default_depth=5, what='image and detections subscriptions'),
    )
    STREAMS = ('image', 'detections')

    def __init__(self, **kwargs):
        super().__init__('object_keypoints', **kwargs)
        self.model: ObjectKeypointModel | None = None

    def configure(self) -> None:
        self.model = load_model(self, ObjectKeypointModel, self.p.model, 'keypoint model')
        self.names = object_keypoint_names(self.model.num_keypoints)
        self.pub = self.create_publisher(KeypointArray, 'keypoints_2d', KEYPOINT_QUEUE)

    def activate(self) -> None:
        p = self.p
        self.unknown_classes: set[str] = set()
        SyncedSubscriber(self, [(Image, 'image'), (Detection2DArray, 'detections')], self._on_frame,
                         slop_s=p.sync_slop_s, queue_size=p.sync_queue_size,
                         qos=qos_profile(p.qos_reliability, p.qos_depth))
        # Inference runs off the executor on the newest frame (core/latest_worker.py).
        self.worker = self.create_worker(self._keypoints, 'object keypoints')

    def cleanup(self) -> None:
        self.model = None

    def _on_frame(self, image: Image, detections: Detection2DArray) -> None:
        if not detections.detections:  # nothing to crop; downstream still sees the frame
            self._publish(image, [])
            return
        rgb = fresh_rgb8(self, image, 0.0)
        if rgb is not None and self.worker.submit((image, rgb, detections)):
            self.diagnostics.drop('busy')

    def _keypoints(self, item) -> None:
        image, rgb, detections = item
        names, boxes, scores = detections_from_msg(detections)
        index = [self.model.index_of(name) for name in names]
        for name in {n for n, i in zip(names, index) if i is None} - self.unknown_classes:
            self.unknown_classes.add(name)
            self.get_logger().warning(f'detections of class {name!r} skipped: the keypoint model knows only '
                                      f'{", ".join(self.model.names)}')
        known = [i for i, k in enumerate(index) if k is not None]
        with self.diagnostics.timed('keypoints'):
            found = self.model.predict(rgb, boxes[known], np.array([index[i] for i in known], int))
        self._publish(image, [
            KeypointInstance(class_id=names[i], instance_id=-1, score=float(scores[i]), bbox=bbox_2d(boxes[i]),
                             keypoints_2d=keypoints_2d(self.names, found.pixels[j], found.confidence[j]))
            for j, i in enumerate(known)])

    def _publish(self, image: Image, instances: list[KeypointInstance]) -> None:
        self.pub.publish(KeypointArray(header=image.header, instances=instances))
        self.diagnostics.output('keypoints_2d')


def main(args=None):
    spin_node(ObjectKeypointsNode, args)


if __name__ == '__main__':
    main()
