"""Voted 3D part keypoints of articulated objects from an RGB-D frame (articulated.estimator.ArticulatedVoter: depth
segmentation, the PAGE voting network through ONNX Runtime, radius voting): the first stage of articulated_pose.

Each colour image is paired with the aligned depth image of the same stamp; the newest pair is processed, older ones
waiting are dropped (never queued). Every processed frame gives one `keypoints_3d` (KeypointArray) and one
`part_points` (PointCloud2, ros/part_points.py), both stamped with the image's header, empty when nothing was found,
so articulated_fitting always has a pair to match."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image, PointCloud2

from kp_pose_msgs.msg import KeypointArray, KeypointInstance
from kp_pose_ros.articulated.estimator import KEYPOINT_SOURCES, ArticulatedEstimatorConfig, ArticulatedVoter, VotedFrame
from kp_pose_ros.articulated.observation import NUM_POINTS
from kp_pose_ros.articulated.voting import VotingConfig
from kp_pose_ros.articulated.voting_model import ArticulatedVotingModel
from kp_pose_ros.core.image_codec import ImageEncodingError
from kp_pose_ros.paths import model_file
from kp_pose_ros.ros.camera_info import CameraInfoCache
from kp_pose_ros.ros.detections import bbox_2d
from kp_pose_ros.ros.images import depth_m_from_msg, fresh_rgb8
from kp_pose_ros.ros.keypoint_msgs import keypoints_3d
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.models import inference_params, load_model, model_path
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.part_points import part_points_cloud
from kp_pose_ros.ros.qos import KEYPOINT_QUEUE, qos_profile, sensor_qos_params
from kp_pose_ros.ros.sync import SyncedSubscriber

DEFAULT_MODEL = 'articulated/page_voting.onnx'
METHODS = ('learned', 'fps', 'box')
MODEL_DESCRIPTION = ('PAGE voting network (ONNX) with its manifest and the category models it names beside it: a path '
                     'relative to the package models/ (the default), or any other path.')
# The voting stages of ArticulatedVoter, reported as latency.<stage> (the fit is articulated_fitting's).
VOTE_STAGES = ('depth', 'segmentation', 'network', 'voting')


def articulated_model_path(value: str) -> Path:
    """The network named by a `model` parameter: a relative path that does not exist from the working directory is
    one in the package models/ (models/articulated/...), anything else as ros.models.model_path reads it."""
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        return model_file(value)
    return model_path(value)


def part_keypoint_names(part_names) -> list[str]:
    """Names of an object's keypoints in messages, part by part: <part>/k0 .. <part>/k2 (rows of the (P, 3, 3)
    keypoints)."""
    return [f'{part}/k{k}' for part in part_names for k in range(3)]


class SyncDrops:
    """Counts the messages a node's SyncedSubscriber gave up on (no partner within the slop, late, duplicate) as
    `dropped.sync` in its /diagnostics: at each matched set and at each report, so stamps that never match are counted
    too. Made once per node; `watch` the subscriber of each activation."""

    def __init__(self, node: PipelineNode) -> None:
        self.node, self.synced, self.seen = node, None, 0
        node.diagnostics.add_check(self)

    def watch(self, synced: SyncedSubscriber) -> None:
        self.synced, self.seen = synced, 0

    def __call__(self) -> tuple:
        synced = self.synced
        if synced is not None:
            dropped = synced.dropped
            for _ in range(dropped - self.seen):
                self.node.diagnostics.drop('sync')
            self.seen = dropped
        return ()


def _check_rho(value) -> str:
    try:
        VotingConfig(rho_m=value)
    except ValueError as exc:
        return str(exc)
    return ''


class ArticulatedVotingNode(PipelineNode):
    PARAMS = (
        Param('model', DEFAULT_MODEL, MODEL_DESCRIPTION),
        *inference_params(),
        Param('method', 'learned', 'Keypoint set whose radii are voted for (the network has radii for each): learned '
              '(PAGE\'s optimised keypoints), fps (farthest points) or box (box corners). articulated_fitting must use '
              'the same.', choices=METHODS),
        Param('keypoints_from', 'voting', 'voting: keypoints by radius voting over the labelled points; direct: the '
              'network\'s regressed keypoints (the ablation).', live=True, choices=KEYPOINT_SOURCES),
        Param('rho_m', 0.005, 'Voting resolution and tolerance (metres): finer is more precise on clean depth and '
              'slower.', live=True, min_value=0.0005, max_value=0.05, check=_check_rho),
        Param('num_points', NUM_POINTS, 'Depth points sampled per object region for the network.', min_value=64,
              max_value=16384),
        Param('min_object_points', 100, 'Points labelled as a category\'s parts needed to report an object.',
              live=True, min_value=1, max_value=16384),
        Param('min_part_points', 15, 'Parts with fewer labelled points publish none on part_points (their box is '
              'then not refined).', live=True, min_value=1, max_value=16384),
        Param('max_part_points', 256, 'At most this many labelled points per part on part_points (an even stride).',
              live=True, min_value=1, max_value=16384),
        Param('seed', 0, 'Seed of the point sampling (same frames, same seed: same keypoints).',
              check=lambda value: '' if value >= 0 else f'seed must be >= 0, got {value}'),
        Param('max_image_age_s', 1.0, 'Images older than this on arrival are dropped (0: never).', live=True,
              min_value=0.0, max_value=60.0),
        Param('depth_max_offset_s', 0.02, 'How far apart the colour and depth stamps may be to pair them.',
              min_value=0.0, max_value=0.1),
        Param('sync_queue_size', 10, 'Images and depth images kept waiting for their partner.', min_value=1,
              max_value=100),
        *sensor_qos_params(what='image, depth and camera_info subscriptions'),
    )
    STREAMS = ('image', 'depth', 'camera_info')
    # Live parameters that are fields of ArticulatedEstimatorConfig of the same name.
    CONFIG_PARAMS = ('keypoints_from', 'min_object_points', 'min_part_points', 'max_part_points')

    def __init__(self, **kwargs):
        super().__init__('articulated_voting', **kwargs)
        self.voter: ArticulatedVoter | None = None
        self.sync_drops = SyncDrops(self)

    def configure(self) -> None:
        p = self.p
        network = load_model(self, ArticulatedVotingModel, str(articulated_model_path(p.model)), 'voting model')
        config = ArticulatedEstimatorConfig(
            method=p.method, keypoints_from=p.keypoints_from, num_points=p.num_points,
            min_object_points=p.min_object_points, min_part_points=p.min_part_points,
            max_part_points=p.max_part_points, seed=p.seed, voting=VotingConfig(rho_m=p.rho_m))
        try:
            self.voter = ArticulatedVoter(network, config)
        except ValueError as exc:
            raise ConfigureError(f'voting model {p.model}: {exc}') from exc
        self.get_logger().info(f'categories {", ".join(network.categories)}; keypoints {p.method} by '
                               f'{p.keypoints_from}')
        self.diagnostics.set_info('categories', ','.join(network.categories))
        self.pub_keypoints = self.create_publisher(KeypointArray, 'keypoints_3d', KEYPOINT_QUEUE)
        self.pub_points = self.create_publisher(PointCloud2, 'part_points', KEYPOINT_QUEUE)

    def activate(self) -> None:
        p = self.p
        sensor_qos = qos_profile(p.qos_reliability, p.qos_depth)
        self.camera_info = CameraInfoCache(self, qos=sensor_qos)
        self.sync_drops.watch(SyncedSubscriber(self, [(Image, 'image'), (Image, 'depth')], self._on_frame,
                                               slop_s=p.depth_max_offset_s, queue_size=p.sync_queue_size,
                                               qos=sensor_qos))
        # Segmentation, the network and voting run off the executor on the newest pair (core/latest_worker.py).
        self.worker = self.create_worker(self._vote, 'articulated voting')

    def cleanup(self) -> None:
        self.voter = None

    def on_parameter_change(self, name, value) -> None:
        voter = self.voter
        if voter is None:
            return
        if name in self.CONFIG_PARAMS:
            voter.config = replace(voter.config, **{name: value})
        elif name == 'rho_m':
            voter.config = replace(voter.config, voting=replace(voter.config.voting, rho_m=value))

    def _on_frame(self, image: Image, depth: Image) -> None:
        self.sync_drops()
        rgb = fresh_rgb8(self, image, self.p.max_image_age_s)
        if rgb is not None and self.worker.submit((image, rgb, depth)):
            self.diagnostics.drop('busy')

    def _vote(self, item) -> None:
        image, rgb, depth_msg = item
        camera = self.camera_info.get(image.header.frame_id)
        if camera is None:
            self.diagnostics.drop('no_camera_info')
            return
        if rgb.shape[:2] != (camera.height, camera.width):
            self.diagnostics.drop('bad_image')
            self.get_logger().error(f'image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info is '
                                    f'{camera.width}x{camera.height}', throttle_duration_sec=5.0)
            return
        try:
            depth = depth_m_from_msg(depth_msg)
        except ImageEncodingError as exc:
            self.diagnostics.drop('bad_depth')
            self.get_logger().error(f'depth image unusable: {exc}', throttle_duration_sec=5.0)
            return
        if depth.shape != rgb.shape[:2]:
            self.diagnostics.drop('bad_depth')
            self.get_logger().error(f'depth image is {depth.shape[1]}x{depth.shape[0]}, the colour image '
                                    f'{rgb.shape[1]}x{rgb.shape[0]}: not aligned to it?', throttle_duration_sec=5.0)
            return
        with self.diagnostics.timed('vote'):
            frame = self.voter.vote(rgb, depth, camera)
        for stage in VOTE_STAGES:
            self.diagnostics.latency(stage, frame.timings_s.get(stage, 0.0) * 1e3)
        if not frame.objects and frame.reason:
            self.get_logger().info(f'nothing found: {frame.reason}', throttle_duration_sec=5.0)
        self._publish(image, frame)

    def _publish(self, image: Image, frame: VotedFrame) -> None:
        instances = []
        for obj in frame.objects:
            names = part_keypoint_names(self.voter.network.categories[obj.category].model.part_names)
            points = obj.keypoints.reshape(-1, 3)
            found = np.isfinite(points).all(axis=1)
            # Every keypoint is sent, so the array stays aligned with the model; one not voted has score 0.
            instances.append(KeypointInstance(
                class_id=obj.category, instance_id=-1, score=float(obj.score), bbox=bbox_2d(obj.box),
                keypoints_3d=keypoints_3d(names, np.where(found[:, None], points, 0.0),
                                          np.where(found, np.nan_to_num(obj.keypoint_scores.reshape(-1)), 0.0))))
        self.pub_keypoints.publish(KeypointArray(header=image.header, instances=instances))
        self.diagnostics.output('keypoints_3d')
        self.pub_points.publish(part_points_cloud(image.header, [obj.part_points or () for obj in frame.objects]))
        self.diagnostics.output('part_points')


def main(args=None):
    spin_node(ArticulatedVotingNode, args)


if __name__ == '__main__':
    main()
