"""2D robot keypoints from colour images (heatmap network through ONNX Runtime): the first stage of robot_calib."""
from __future__ import annotations

import time

import numpy as np
from kp_pose_msgs.msg import KeypointArray, KeypointInstance
from rclpy.node import Node
from sensor_msgs.msg import Image

from kp_pose_ros.core.image_codec import ImageEncodingError
from kp_pose_ros.core.onnx_model import PROVIDER_CHOICES
from kp_pose_ros.robot.keypoints import RobotKeypointDetector
from kp_pose_ros.ros.images import rgb8_from_msg
from kp_pose_ros.ros.keypoint_msgs import keypoints_2d
from kp_pose_ros.ros.models import load_model
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param, declare_params
from kp_pose_ros.ros.qos import QOS_CHOICES, qos_from_name
from kp_pose_ros.ros.stamps import age_s

PARAMS = (
    Param('model', 'robot_keypoints_panda.onnx', 'Keypoint heatmap model: a file in the package models/ or a path.'),
    Param('providers', 'auto', 'ONNX Runtime execution provider.', choices=PROVIDER_CHOICES),
    Param('threads', 0, 'ONNX Runtime intra-op threads (0: onnxruntime default).', min_value=0, max_value=64),
    Param('class_id', 'panda', 'class_id of the published instance.'),
    Param('max_image_age_s', 1.0, 'Images older than this on arrival are dropped (0: never).', min_value=0.0,
          max_value=60.0),
    Param('qos', 'sensor_data', 'QoS of the image subscription.', choices=QOS_CHOICES),
)


class RobotKeypointsNode(Node):
    def __init__(self, **kwargs):
        super().__init__('robot_keypoints', **kwargs)
        self.p = declare_params(self, PARAMS)
        self.detector = load_model(self, lambda path: RobotKeypointDetector(path, self.p.providers, self.p.threads),
                                   self.p.model, 'robot keypoint model')
        self.pub = self.create_publisher(KeypointArray, 'keypoints_2d', 10)
        self.create_subscription(Image, 'image', self._on_image, qos_from_name(self.p.qos, depth=2))
        self.latency_ms: list[float] = []

    def _on_image(self, msg: Image) -> None:
        if self.detector is None:
            self.get_logger().warning('no keypoint model loaded; dropping images', throttle_duration_sec=10.0)
            return
        if self.p.max_image_age_s > 0 and age_s(self.get_clock(), msg.header.stamp) > self.p.max_image_age_s:
            self.get_logger().warning(f'dropping an image {age_s(self.get_clock(), msg.header.stamp):.2f} s old '
                                      f'(max_image_age_s {self.p.max_image_age_s:g})', throttle_duration_sec=5.0)
            return
        try:
            rgb = rgb8_from_msg(msg)
        except ImageEncodingError as exc:
            self.get_logger().error(f'cannot use image on {self.resolve_topic_name("image")}: {exc}',
                                    throttle_duration_sec=5.0)
            return
        started = time.perf_counter()
        pixels, confidence = self.detector.detect(rgb)
        self.latency_ms.append((time.perf_counter() - started) * 1e3)
        inst = KeypointInstance(class_id=self.p.class_id, instance_id=0, score=float(np.mean(confidence)))
        ok = np.all(np.isfinite(pixels), axis=1)
        if ok.any():
            lo, hi = pixels[ok].min(axis=0), pixels[ok].max(axis=0)
            inst.bbox.center.position.x, inst.bbox.center.position.y = map(float, (lo + hi) / 2)
            inst.bbox.size_x, inst.bbox.size_y = map(float, hi - lo)
        inst.keypoints_2d = keypoints_2d(self.detector.keypoint_names, pixels, confidence)
        self.pub.publish(KeypointArray(header=msg.header, instances=[inst]))


def main(args=None):
    spin_node(RobotKeypointsNode, args)


if __name__ == '__main__':
    main()
