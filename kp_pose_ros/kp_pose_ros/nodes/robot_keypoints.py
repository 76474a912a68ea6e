"""2D robot keypoints from colour images (heatmap network through ONNX Runtime): the first stage of robot_calib."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from kp_pose_msgs.msg import KeypointArray, KeypointInstance
from kp_pose_ros.robot.keypoints import RobotKeypointDetector
from kp_pose_ros.ros.images import fresh_rgb8
from kp_pose_ros.ros.keypoint_msgs import keypoints_2d
from kp_pose_ros.ros.lifecycle_node import PipelineNode
from kp_pose_ros.ros.models import inference_params, load_model
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.qos import qos_profile, sensor_qos_params


class RobotKeypointsNode(PipelineNode):
    PARAMS = (
        Param('model', 'robot_keypoints_panda.onnx', 'Keypoint heatmap model: a file in the package models/ or a '
              'path.'),
        *inference_params(),
        Param('class_id', 'panda', 'class_id of the published instance.'),
        Param('max_image_age_s', 1.0, 'Images older than this on arrival are dropped (0: never).', live=True,
              min_value=0.0, max_value=60.0),
        *sensor_qos_params(default_depth=2, what='image subscription'),
    )
    STREAMS = ('image',)

    def __init__(self, **kwargs):
        super().__init__('robot_keypoints', **kwargs)
        self.detector: RobotKeypointDetector | None = None

    def configure(self) -> None:
        self.detector = load_model(self, RobotKeypointDetector, self.p.model, 'keypoint model')
        self.pub = self.create_publisher(KeypointArray, 'keypoints_2d', 10)

    def activate(self) -> None:
        self.create_subscription(Image, 'image', self._on_image, qos_profile(self.p.qos_reliability, self.p.qos_depth))
        # Inference runs off the executor on the newest image (core/latest_worker.py).
        self.worker = self.create_worker(self._detect, 'keypoint detection')

    def cleanup(self) -> None:
        self.detector = None

    def _on_image(self, msg: Image) -> None:
        rgb = fresh_rgb8(self, msg, self.p.max_image_age_s)
        if rgb is None:
            return
        if self.worker.submit((msg, rgb)):
            self.diagnostics.drop('busy')

    def _detect(self, item) -> None:
        msg, rgb = item
        with self.diagnostics.timed('detect'):
            pixels, confidence = self.detector.detect(rgb)
        inst = KeypointInstance(class_id=self.p.class_id, instance_id=0, score=float(np.mean(confidence)))
        ok = np.all(np.isfinite(pixels), axis=1)
        if ok.any():
            lo, hi = pixels[ok].min(axis=0), pixels[ok].max(axis=0)
            inst.bbox.center.position.x, inst.bbox.center.position.y = map(float, (lo + hi) / 2)
            inst.bbox.size_x, inst.bbox.size_y = map(float, hi - lo)
        inst.keypoints_2d = keypoints_2d(self.detector.keypoint_names, pixels, confidence)
        self.pub.publish(KeypointArray(header=msg.header, instances=[inst]))
        self.diagnostics.output('keypoints_2d')


def main(args=None):
    spin_node(RobotKeypointsNode, args)


if __name__ == '__main__':
    main()
