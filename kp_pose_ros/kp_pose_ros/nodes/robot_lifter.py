"""2D robot keypoints -> 3D keypoints in the camera frame by conditional diffusion in NCCS (RoboKeyGen §III-A/B), or
by any lifter model the suite trains (the no-NCCS ablation in pixels, the direct regression baseline): the model's
manifest says which and in what space it takes its 2D keypoints."""
from __future__ import annotations

import numpy as np

from kp_pose_msgs.msg import KeypointArray, KeypointInstance
from kp_pose_ros.robot.lifting import DiffusionLifter, load_lifter
from kp_pose_ros.ros.camera_info import CameraInfoCache
from kp_pose_ros.ros.keypoint_msgs import instance_2d, keypoints_3d
from kp_pose_ros.ros.lifecycle_node import PipelineNode
from kp_pose_ros.ros.models import inference_params, load_model
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.qos import KEYPOINT_QUEUE, qos_profile, sensor_qos_params
from kp_pose_ros.ros.stamps import stamp_to_ns


class RobotLifterNode(PipelineNode):
    PARAMS = (
        Param('model', 'robot_lifter_panda.onnx', 'Lifting model (diffusion score model or direct regressor): a file '
              'in the package models/ or a path.'),
        *inference_params(default_threads=1),
        Param('num_candidates', 10, 'Diffusion: K samples averaged per frame (paper: 10).', live=True, min_value=1,
              max_value=100),
        Param('steps', 0, 'DDIM steps from noise (0: the model manifest default).', min_value=0, max_value=1000),
        Param('online', True, 'Start from the previous frame\'s estimate (fewer steps, steadier) when it is recent.',
              live=True),
        Param('online_max_gap_s', 0.5, 'Previous estimates older than this are not used to initialise.', live=True,
              min_value=0.0, max_value=10.0),
        Param('min_keypoint_confidence', 0.3, '2D keypoints below this confidence are treated as missing.',
              live=True, min_value=0.0, max_value=1.0),
        Param('seed', 0, 'Seed of the sampler noise.'),
        *sensor_qos_params(what='camera_info subscription'),
    )
    STREAMS = ('keypoints_2d', 'camera_info')

    def __init__(self, **kwargs):
        super().__init__('robot_lifter', **kwargs)
        self.lifter: DiffusionLifter | None = None
        self.previous: tuple[int, np.ndarray] | None = None

    def configure(self) -> None:
        p = self.p
        self.lifter = load_model(self, lambda path, **session: load_lifter(
            path, **session, num_candidates=p.num_candidates, steps=p.steps or None, seed=p.seed),
            p.model, 'lifting model')
        self.pub = self.create_publisher(KeypointArray, 'keypoints_3d', 10)

    def activate(self) -> None:
        self.previous = None
        self.camera_info = CameraInfoCache(self, qos=qos_profile(self.p.qos_reliability, self.p.qos_depth))
        self.create_subscription(KeypointArray, 'keypoints_2d', self._on_keypoints, KEYPOINT_QUEUE)
        # Sampling runs off the executor on the newest keypoints (core/latest_worker.py).
        self.worker = self.create_worker(self._lift, 'lifting')

    def cleanup(self) -> None:
        self.lifter = None

    def on_parameter_change(self, name, value) -> None:
        if name == 'num_candidates' and isinstance(self.lifter, DiffusionLifter):
            self.lifter.num_candidates = int(value)

    def _on_keypoints(self, msg: KeypointArray) -> None:
        if not msg.instances:
            return
        camera = self.camera_info.get(msg.header.frame_id)
        if camera is None:
            self.diagnostics.drop('no_camera_info')
            return
        if self.worker.submit((msg, camera)):
            self.diagnostics.drop('busy')

    def _lift(self, item) -> None:
        msg, camera = item
        inst = msg.instances[0]
        names = self.lifter.keypoint_links
        px, score = instance_2d(inst, names)
        valid = (score >= self.p.min_keypoint_confidence) & np.all(np.isfinite(px), axis=1)
        stamp = stamp_to_ns(msg.header.stamp)
        previous = None
        if self.p.online and self.previous is not None \
                and 0 <= stamp - self.previous[0] <= self.p.online_max_gap_s * 1e9:
            previous = self.previous[1]
        try:
            with self.diagnostics.timed('lift'):
                result = self.lifter.lift(self.lifter.condition_of(np.where(valid[:, None], px, np.nan), camera),
                                          valid, previous)
        except ValueError as exc:
            self.diagnostics.drop('too_few_keypoints')
            self.get_logger().warning(f'cannot lift this frame: {exc}', throttle_duration_sec=2.0)
            self.previous = None
            return
        self.previous = (stamp, result.points)
        out = KeypointInstance(class_id=inst.class_id, instance_id=inst.instance_id, score=inst.score, bbox=inst.bbox,
                               keypoints_2d=inst.keypoints_2d)
        # 3D confidence: the 2D confidence for observed keypoints; those the model filled in are marked low.
        out.keypoints_3d = keypoints_3d(names, result.points, np.where(valid, score, 0.0))
        self.pub.publish(KeypointArray(header=msg.header, instances=[out]))
        self.diagnostics.output('keypoints_3d')


def main(args=None):
    spin_node(RobotLifterNode, args)


if __name__ == '__main__':
    main()
