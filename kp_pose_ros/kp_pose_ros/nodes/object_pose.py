"""6-DoF object poses from 2D object keypoints (objects.estimator.ObjectPoseSolver: PnP + RANSAC, optional depth
correction and check, symmetric objects made canonical, tracked instance ids): the last stage of object_pose.

Publishes vision_msgs/Detection3DArray, a TF frame per instance, RViz markers and a debug overlay, all stamped with
the source image's time; `~/reset` forgets the tracked instances."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from kp_pose_msgs.msg import KeypointArray
from kp_pose_msgs.srv import ResetCalibration as ResetService  # empty request, success + message (std_srvs/Trigger)
from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.draw import draw_axes, draw_box, draw_skeleton
from kp_pose_ros.core.image_codec import ImageEncodingError
from kp_pose_ros.core.onnx_model import ModelLoadError
from kp_pose_ros.core.transforms import make_transform, transform_points
from kp_pose_ros.objects.estimator import ObjectEstimatorConfig, ObjectPose, ObjectPoseSolver
from kp_pose_ros.objects.keypoint_model import load_keypoint_set
from kp_pose_ros.objects.models import load_bop_models
from kp_pose_ros.objects.pose import ObjectPoseConfig
from kp_pose_ros.ros.camera_info import CameraInfoCache
from kp_pose_ros.ros.detections import bbox_xyxy, detection_3d
from kp_pose_ros.ros.images import array_to_image, depth_m_from_msg, rgb8_from_msg
from kp_pose_ros.ros.keypoint_msgs import instance_2d, object_keypoint_names
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.markers import axes_marker, box_marker, delete_all_marker, marker_array, mesh_marker
from kp_pose_ros.ros.models import model_path
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.qos import qos_profile, sensor_qos_params
from kp_pose_ros.ros.stamps import stamp_to_ns
from kp_pose_ros.ros.sync import SyncedSubscriber
from kp_pose_ros.ros.tf import TfBroadcaster, transform_stamped

# Live parameters that are fields of ObjectPoseConfig, and of ObjectEstimatorConfig, of the same name.
POSE_PARAMS = ('min_keypoint_confidence', 'reprojection_error_px')
ESTIMATOR_PARAMS = ('min_pose_score', 'one_per_class', 'track')
# Depth and colour images kept waiting for the keypoints of their frame: 1 s at 30 Hz, more than the detector and
# keypoint stages take together on a CPU.
FRAME_QUEUE = 30
OK_COLOUR, REJECTED_COLOUR, KEYPOINT_COLOUR = (40, 230, 60), (230, 60, 60), (255, 220, 0)


class ObjectPoseNode(PipelineNode):
    PARAMS = (
        Param('keypoint_model', 'lmo_keypoints.onnx', 'The object_keypoints node\'s model (file in models/ or a '
              'path): only its manifest and 3D keypoint file are read, for the objects and their model keypoints.'),
        Param('models_dir', '', 'BOP model folder of the objects (obj_XXXXXX.ply in mm, models_info.json): '
              'symmetries, boxes, the depth check and mesh markers. Empty: keypoints only.'),
        Param('min_keypoint_confidence', 0.3, 'Keypoints below this confidence are treated as missing.', live=True,
              min_value=0.0, max_value=1.0),
        Param('reprojection_error_px', 3.0, 'PnP RANSAC inlier threshold floor in image pixels (it grows with the '
              'detection, objects.pose.ObjectPoseConfig).', live=True, min_value=0.5, max_value=100.0),
        Param('min_pose_score', 0.0, 'Poses scored below this (inlier ratio x confidence x depth agreement) are not '
              'published.', live=True, min_value=0.0, max_value=1.0),
        Param('use_depth', False, 'Pair each frame with the aligned depth image on `depth` (by stamp): the depth '
              'corrects the distance along the viewing ray and scores the pose.'),
        Param('depth_max_offset_s', 0.02, 'use_depth: how far apart the depth and colour stamps may be to pair them.',
              min_value=0.0, max_value=0.1),
        Param('one_per_class', False, 'Publish only the best pose of each class (scenes that hold each object once, '
              'as LINEMOD).', live=True),
        Param('track', True, 'Keep instance ids stable across frames (and symmetric objects\' rotations continuous); '
              'off: ids are per frame.', live=True),
        Param('tracking_max_distance_m', 0.05, 'A detection continues a track whose centre moved at most this much.',
              min_value=0.001, max_value=1.0),
        Param('tracking_max_age_s', 1.0, 'Tracks unseen for this long end; their ids are never reused.',
              min_value=0.01, max_value=60.0),
        Param('frame_prefix', '', 'TF frames of the instances are <frame_prefix><class>_<instance id>.'),
        Param('publish_tf', True, 'Broadcast a TF frame per instance, child of the camera frame.'),
        Param('publish_overlay', True, 'Subscribe to the colour image and publish `overlay`: boxes, keypoints and '
              'the projected axes of each pose.'),
        *sensor_qos_params(what='keypoints, image, depth and camera_info subscriptions'),
    )
    STREAMS = ('keypoints_2d', 'depth', 'camera_info', 'image')

    def __init__(self, **kwargs):
        super().__init__('object_pose', **kwargs)
        self.solver: ObjectPoseSolver | None = None
        # Held by each solve (worker thread) and by a reset (executor thread): the tracker is not thread-safe.
        self.lock = threading.Lock()

    def configure(self) -> None:
        p = self.p
        path = model_path(p.keypoint_model)
        try:
            obj_ids, names, keypoints_3d = load_keypoint_set(path)
        except (ModelLoadError, OSError) as exc:
            raise ConfigureError(f'keypoint model {path}: {exc}') from exc
        self.keypoint_names = {n: object_keypoint_names(len(k)) for n, k in zip(names, keypoints_3d)}
        self.models = self._load_models(dict(zip(obj_ids, names)))
        # Axes as long as half the object, so they stick out of it.
        self.axis_length = {n: max(float(np.ptp(k, axis=0).max()) / 2, 0.01) for n, k in zip(names, keypoints_3d)}
        config = ObjectEstimatorConfig(
            use_depth=p.use_depth, min_pose_score=p.min_pose_score, one_per_class=p.one_per_class, track=p.track,
            tracking_max_distance_m=p.tracking_max_distance_m, tracking_max_age_s=p.tracking_max_age_s,
            pose=ObjectPoseConfig(min_keypoint_confidence=p.min_keypoint_confidence,
                                  reprojection_error_px=p.reprojection_error_px))
        self.solver = ObjectPoseSolver(dict(zip(names, keypoints_3d)), dict(zip(names, obj_ids)), self.models, config)
        self.get_logger().info(f'{len(names)} objects from {path.name}'
                               + (f', {len(self.models)} models from {p.models_dir}' if p.models_dir else ''))
        self.pub_detections = self.create_publisher(Detection3DArray, 'detections_3d', 10)
        self.pub_markers = self.create_publisher(MarkerArray, 'markers', 10)
        self.tf = TfBroadcaster(self) if p.publish_tf else None
        if p.publish_overlay:
            self.pub_overlay = self.create_publisher(Image, 'overlay', 2)

    def _load_models(self, names_by_id: dict[int, str]) -> dict:
        """The BOP models of the keypoint model's objects, by class name ({} without models_dir)."""
        folder = self.p.models_dir
        if not folder:
            return {}
        try:
            models = load_bop_models(Path(folder).expanduser())
        except (OSError, ValueError) as exc:
            raise ConfigureError(f'models_dir {folder}: {exc}') from exc
        missing = sorted(set(names_by_id) - set(models))
        if missing:
            self.get_logger().warning(f'models_dir {folder} has no model of objects {missing}: no symmetries, box or '
                                      'depth check for them')
        return {names_by_id[i]: m for i, m in models.items() if i in names_by_id}

    def activate(self) -> None:
        p = self.p
        sensor_qos = qos_profile(p.qos_reliability, p.qos_depth)
        with self.lock:
            self.solver.reset()
        self.camera_info = CameraInfoCache(self, qos=sensor_qos)
        topics = [(KeypointArray, 'keypoints_2d')] + ([(Image, 'depth')] if p.use_depth else [])
        SyncedSubscriber(self, topics, self._on_frame, slop_s=p.depth_max_offset_s, queue_size=FRAME_QUEUE,
                         qos=sensor_qos)
        self.images: deque[Image] = deque(maxlen=FRAME_QUEUE)
        if p.publish_overlay:
            self.create_subscription(Image, 'image', self.images.append, sensor_qos)
        self.create_service(ResetService, '~/reset', self._on_reset)
        # The fits and the overlay run off the executor, so images and depth are taken as they arrive.
        self.worker = self.create_worker(self._estimate, 'object pose')

    def cleanup(self) -> None:
        self.solver = None
        self.models = {}

    def on_parameter_change(self, name, value) -> None:
        with self.lock:
            if self.solver is None:
                return
            config = self.solver.config
            if name in POSE_PARAMS:
                self.solver.config = replace(config, pose=replace(config.pose, **{name: value}))
            elif name in ESTIMATOR_PARAMS:
                self.solver.config = replace(config, **{name: value})

    def _on_reset(self, request, response):
        with self.lock:
            self.solver.reset()
        self.pub_markers.publish(marker_array([delete_all_marker(self.camera_info.frame_id)]))
        response.success, response.message = True, 'tracking reset: new instance ids from the next frame'
        self.get_logger().info(response.message)
        return response

    def _on_frame(self, keypoints: KeypointArray, depth: Image | None = None) -> None:
        if self.worker.submit((keypoints, depth)):
            self.diagnostics.drop('busy')

    def _estimate(self, item) -> None:
        msg, depth_msg = item
        camera = self.camera_info.get(msg.header.frame_id)
        if camera is None:
            self.diagnostics.drop('no_camera_info')
            return
        names = [inst.class_id for inst in msg.instances]
        boxes = np.array([bbox_xyxy(inst.bbox) for inst in msg.instances]).reshape(-1, 4)
        scores = np.array([inst.score for inst in msg.instances])
        # Keypoints of a class without model keypoints stay empty: the solver rejects the detection.
        found = [instance_2d(inst, self.keypoint_names.get(inst.class_id, ())) for inst in msg.instances]
        pixels = [camera.undistort_pixels(px) if camera.has_distortion and len(px) else px for px, _ in found]
        depth = self._depth(depth_msg, camera) if depth_msg is not None else None
        stamp_s = stamp_to_ns(msg.header.stamp) / 1e9
        with self.lock, self.diagnostics.timed('pose'):
            poses, rejected = self.solver.solve(names, boxes, scores, pixels, [c for _, c in found], camera.K,
                                                depth, stamp_s)
        for name, why in rejected:
            self.diagnostics.drop('rejected')
            self.get_logger().info(f'{name}: no pose ({why})', throttle_duration_sec=5.0)
        self._publish(msg, poses, camera)
        if self.p.publish_overlay:
            self._publish_overlay(msg, poses, camera, [px for px, _ in found], [c for _, c in found])

    def _depth(self, msg: Image, camera: CameraModel) -> np.ndarray | None:
        """The depth image in metres, or None (logged, counted) when it is unusable for this camera."""
        try:
            depth = depth_m_from_msg(msg)
        except ImageEncodingError as exc:
            self.diagnostics.drop('bad_depth')
            self.get_logger().error(f'depth image unusable: {exc}', throttle_duration_sec=5.0)
            return None
        if depth.shape != (camera.height, camera.width):
            self.diagnostics.drop('bad_depth')
            self.get_logger().error(f'depth image is {depth.shape[1]}x{depth.shape[0]} but camera_info is '
                                    f'{camera.width}x{camera.height}: not aligned to the colour image? '
                                    'Keypoints only', throttle_duration_sec=5.0)
            return None
        return depth

    def _frame_names(self, poses: list[ObjectPose]) -> list[str]:
        """TF child frame of each pose: <prefix><class>_<instance id>, per-frame numbering without tracking."""
        counts: dict[str, int] = {}
        out = []
        for pose in poses:
            number = pose.instance_id
            if number < 0:
                number = counts[pose.name] = counts.get(pose.name, -1) + 1
            out.append(f'{self.p.frame_prefix}{pose.name}_{number}')
        return out

    def _publish(self, msg: KeypointArray, poses: list[ObjectPose], camera: CameraModel) -> None:
        header, frame = msg.header, msg.header.frame_id
        children = self._frame_names(poses)
        detections = Detection3DArray(header=header)
        for pose, child in zip(poses, children):
            model = self.models.get(pose.name)
            detections.detections.append(detection_3d(
                header, pose.name, pose.score, pose.T_cam_obj, child, model.box_min_m if model else None,
                model.box_size_m if model else None))
        self.pub_detections.publish(detections)
        self.diagnostics.output('detections_3d')
        if not poses:
            return
        if not frame:
            self.get_logger().warning('keypoints_2d has no header.frame_id: no TF frames or markers',
                                      throttle_duration_sec=5.0)
            return
        if self.tf is not None:
            self.tf.send([transform_stamped(frame, child, pose.T_cam_obj, header.stamp)
                          for pose, child in zip(poses, children)])
        markers = []
        for index, pose in enumerate(poses):
            marker_id = pose.instance_id if pose.instance_id >= 0 else index
            T = pose.T_cam_obj
            markers.append(axes_marker(T, frame, header.stamp, ns='object_axes', marker_id=marker_id,
                                       length=self.axis_length[pose.name]))
            model = self.models.get(pose.name)
            if model is not None:
                centre = T @ make_transform(np.eye(3), model.box_min_m + model.box_size_m / 2)
                markers.append(box_marker(centre, model.box_size_m, frame, header.stamp, ns='object_boxes',
                                          marker_id=marker_id))
                mesh = (Path(self.p.models_dir).expanduser() / f'{model.name}.ply').resolve()
                markers.append(mesh_marker(T, f'file://{mesh}', frame, header.stamp, ns='object_meshes',
                                           marker_id=marker_id, scale=0.001))  # BOP meshes are in millimetres
        self.pub_markers.publish(marker_array(markers))

    def _publish_overlay(self, msg: KeypointArray, poses: list[ObjectPose], camera: CameraModel, pixels,
                         confidence) -> None:
        """The colour image of the same stamp with every detection's box (green: posed, red: rejected), its
        confident keypoints, and each pose's projected axes."""
        image = next((m for m in list(self.images) if m.header.stamp == msg.header.stamp), None)
        if image is None:
            return
        try:
            drawn = rgb8_from_msg(image)
        except ImageEncodingError as exc:
            self.get_logger().error(f'overlay: {exc}', throttle_duration_sec=5.0)
            return
        posed = {tuple(np.round(p.box, 3)) for p in poses}
        threshold = self.p.min_keypoint_confidence
        for inst, px, conf in zip(msg.instances, pixels, confidence):
            box = bbox_xyxy(inst.bbox)
            ok = tuple(np.round(box, 3)) in posed
            drawn = draw_box(drawn, box, OK_COLOUR if ok else REJECTED_COLOUR, f'{inst.class_id} {inst.score:.2f}')
            drawn = draw_skeleton(drawn, px, [], KEYPOINT_COLOUR, valid=conf >= threshold, radius=3)
        for pose in poses:
            tips = np.vstack([np.zeros(3), self.axis_length[pose.name] * np.eye(3)])
            drawn = draw_axes(drawn, camera.project(transform_points(pose.T_cam_obj, tips)))
        self.pub_overlay.publish(array_to_image(drawn, 'rgb8', image.header))
        self.diagnostics.output('overlay')


def main(args=None):
    spin_node(ObjectPoseNode, args)


if __name__ == '__main__':
    main()
