"""2D robot keypoints -> 3D keypoints in the camera frame by conditional diffusion in NCCS (RoboKeyGen §III-A/B)."""
from __future__ import annotations

import time

import numpy as np
from kp_pose_msgs.msg import KeypointArray, KeypointInstance
from rclpy.node import Node

from kp_pose_ros.robot.lifting import DiffusionLifter
from kp_pose_ros.core.onnx_model import PROVIDER_CHOICES
from kp_pose_ros.ros.camera_info import CameraInfoCache
from kp_pose_ros.ros.keypoint_msgs import instance_2d, keypoints_3d
from kp_pose_ros.ros.models import load_model
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param, declare_params
from kp_pose_ros.ros.stamps import stamp_to_ns

PARAMS = (
    Param('model', 'robot_lifter_panda.onnx', 'Diffusion score model: a file in the package models/ or a path.'),
    Param('providers', 'auto', 'ONNX Runtime execution provider.', choices=PROVIDER_CHOICES),
    Param('num_candidates', 10, 'K samples averaged per frame (paper: 10).', min_value=1, max_value=100),
    Param('steps', 0, 'DDIM steps from noise (0: the model manifest default).', min_value=0, max_value=1000),
    Param('online', True, 'Start from the previous frame\'s estimate (fewer steps, steadier) when it is recent.'),
    Param('online_max_gap_s', 0.5, 'Previous estimates older than this are not used to initialise.',
          min_value=0.0, max_value=10.0),
    Param('min_keypoint_confidence', 0.3, '2D keypoints below this confidence are treated as missing.',
          min_value=0.0, max_value=1.0),
    Param('seed', 0, 'Seed of the sampler noise.'),
)


class RobotLifterNode(Node):
    def __init__(self, **kwargs):
        super().__init__('robot_lifter', **kwargs)
        self.p = p = declare_params(self, PARAMS)
        self.lifter = load_model(self, lambda path: DiffusionLifter(
            path, p.providers, num_candidates=p.num_candidates, steps=p.steps or None, seed=p.seed),
            p.model, 'lifting model')
        self.camera_info = CameraInfoCache(self)
        self.pub = self.create_publisher(KeypointArray, 'keypoints_3d', 10)
        self.create_subscription(KeypointArray, 'keypoints_2d', self._on_keypoints, 10)
        self.previous: tuple[int, np.ndarray] | None = None
        self.latency_ms: list[float] = []

    def _on_keypoints(self, msg: KeypointArray) -> None:
        if self.lifter is None or not msg.instances:
            return
        camera = self.camera_info.get(msg.header.frame_id)
        if camera is None:
            return
        inst = msg.instances[0]
        names = self.lifter.keypoint_links
        px, score = instance_2d(inst, names)
        valid = (score >= self.p.min_keypoint_confidence) & np.all(np.isfinite(px), axis=1)
        stamp = stamp_to_ns(msg.header.stamp)
        previous = None
        if self.p.online and self.previous is not None \
                and 0 <= stamp - self.previous[0] <= self.p.online_max_gap_s * 1e9:
            previous = self.previous[1]
        started = time.perf_counter()
        try:
            result = self.lifter.lift(camera.normalize(np.where(valid[:, None], px, np.nan)), valid, previous)
        except ValueError as exc:
            self.get_logger().warning(f'cannot lift this frame: {exc}', throttle_duration_sec=2.0)
            self.previous = None
            return
        self.latency_ms.append((time.perf_counter() - started) * 1e3)
        self.previous = (stamp, result.points)
        out = KeypointInstance(class_id=inst.class_id, instance_id=inst.instance_id, score=inst.score, bbox=inst.bbox,
                               keypoints_2d=inst.keypoints_2d)
        # 3D confidence: the 2D confidence for observed keypoints; those the model filled in are marked low.
        out.keypoints_3d = keypoints_3d(names, result.points, np.where(valid, score, 0.0))
        self.pub.publish(KeypointArray(header=msg.header, instances=[out]))


def main(args=None):
    spin_node(RobotLifterNode, args)


if __name__ == '__main__':
    main()
