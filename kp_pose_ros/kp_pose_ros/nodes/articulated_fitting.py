"""Part poses, sizes and joint states of articulated objects from voted part keypoints (articulated.estimator.
ArticulatedFitter: joint-consistent part boxes, refined against each part's labelled points, stable instance ids):
the last stage of articulated_pose.

`keypoints_3d` and `part_points` of one frame are paired by stamp. Published, stamped with the source image's time:
a TF frame per located part (<category>_<instance id>/<part>, child of the camera frame, the part's box frame),
`joint_states` (one JointState per object), `detections_3d` (one Detection3D per located part), RViz `markers` and an
`overlay`; `~/reset` forgets the tracked instances."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import replace

import numpy as np
from sensor_msgs.msg import Image, JointState, PointCloud2
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import Marker, MarkerArray

from kp_pose_msgs.msg import KeypointArray
from kp_pose_msgs.srv import ResetCalibration as ResetService  # empty request, success + message (std_srvs/Trigger)
from kp_pose_ros.articulated.estimator import (
    ArticulatedEstimatorConfig,
    ArticulatedFitter,
    ArticulatedObject,
    VotedObject,
)
from kp_pose_ros.articulated.voting_model import load_category_models
from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.draw import draw_box, draw_skeleton
from kp_pose_ros.core.image_codec import ImageEncodingError
from kp_pose_ros.core.onnx_model import ModelLoadError
from kp_pose_ros.core.transforms import transform_points
from kp_pose_ros.nodes.articulated_voting import (
    DEFAULT_MODEL,
    METHODS,
    SyncDrops,
    articulated_model_path,
    part_keypoint_names,
)
from kp_pose_ros.ros.camera_info import CameraInfoCache
from kp_pose_ros.ros.detections import bbox_xyxy, detection_3d
from kp_pose_ros.ros.images import array_to_image, rgb8_from_msg
from kp_pose_ros.ros.joint_states import joint_state
from kp_pose_ros.ros.keypoint_msgs import instance_3d
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.markers import axes_marker, box_marker, delete_all_marker, marker_array, skeleton_marker
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.part_points import part_points_from_cloud, split_part_points
from kp_pose_ros.ros.qos import qos_profile, sensor_qos_params
from kp_pose_ros.ros.stamps import stamp_to_ns
from kp_pose_ros.ros.sync import SyncedSubscriber
from kp_pose_ros.ros.tf import TfBroadcaster, transform_stamped

# Keypoints, part points and colour images kept waiting for their partners: 1 s at 30 Hz.
FRAME_QUEUE = 30
# The 8 corners of a unit box (index bits: x, y, z) and its 12 edges (corners differing in one bit).
BOX_CORNERS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], float) - 0.5
BOX_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count('1') == 1]
PART_COLOURS = ((40, 230, 60), (60, 140, 255), (255, 160, 0), (230, 60, 230), (0, 220, 220), (255, 255, 80))
KEYPOINT_COLOUR, REGION_COLOUR = (255, 220, 0), (200, 200, 200)
JOINT_RGBA = (1.0, 0.85, 0.0, 1.0)


class ArticulatedFittingNode(PipelineNode):
    PARAMS = (
        Param('model', DEFAULT_MODEL, 'The articulated_voting node\'s network (a path relative to the package '
              'models/, or any other path): only its manifest and the category models it names are read.'),
        Param('method', 'learned', 'Keypoint set the keypoints were voted for: articulated_voting\'s method.',
              choices=METHODS),
        Param('min_confidence', 0.05, 'Objects whose best part is less confident than this are not published.',
              live=True, min_value=0.0, max_value=1.0),
        Param('tracking_max_distance_m', 0.10, 'An object continues a track whose root part moved at most this '
              'much.', min_value=0.001, max_value=5.0),
        Param('tracking_max_age_s', 1.0, 'Tracks unseen for this long end; their ids are never reused.',
              min_value=0.01, max_value=60.0),
        Param('frame_prefix', '', 'TF frames of the parts are <frame_prefix><category>_<instance id>/<part>.'),
        Param('publish_tf', True, 'Broadcast a TF frame per located part (its box frame), child of the camera frame.'),
        Param('publish_overlay', True, 'Subscribe to the colour image and camera_info and publish `overlay`: '
              'object regions, keypoints and the projected part boxes.'),
        *sensor_qos_params(what='keypoints, part points, image and camera_info subscriptions'),
    )
    STREAMS = ('keypoints_3d', 'part_points', 'image', 'camera_info')

    def __init__(self, **kwargs):
        super().__init__('articulated_fitting', **kwargs)
        self.fitter: ArticulatedFitter | None = None
        # Held by each fit (worker thread) and by a reset (executor thread): the tracker is not thread-safe.
        self.lock = threading.Lock()
        self.sync_drops = SyncDrops(self)

    def configure(self) -> None:
        p = self.p
        path = articulated_model_path(p.model)
        try:
            categories = load_category_models(path)
            for model in categories.values():
                model.keypoints(p.method)
        except (ModelLoadError, KeyError) as exc:
            raise ConfigureError(f'voting model {path}: {exc}') from exc
        self.categories = categories
        self.keypoint_names = {name: part_keypoint_names(m.part_names) for name, m in categories.items()}
        self.fitter = ArticulatedFitter(categories, ArticulatedEstimatorConfig(
            method=p.method, min_confidence=p.min_confidence, track_distance_m=p.tracking_max_distance_m,
            track_age_s=p.tracking_max_age_s))
        self.get_logger().info(f'categories {", ".join(categories)} from {path.name}, {p.method} keypoints')
        self.diagnostics.set_info('categories', ','.join(categories))
        self.pub_detections = self.create_publisher(Detection3DArray, 'detections_3d', 10)
        self.pub_joints = self.create_publisher(JointState, 'joint_states', 10)
        self.pub_markers = self.create_publisher(MarkerArray, 'markers', 10)
        self.tf = TfBroadcaster(self) if p.publish_tf else None
        if p.publish_overlay:
            self.pub_overlay = self.create_publisher(Image, 'overlay', 2)

    def activate(self) -> None:
        p = self.p
        sensor_qos = qos_profile(p.qos_reliability, p.qos_depth)
        with self.lock:
            self.fitter.reset()
        self.unknown: set[str] = set()
        self.last_frame = ''  # the camera frame of the last markers, for the reset's DELETEALL
        self.sync_drops.watch(SyncedSubscriber(self, [(KeypointArray, 'keypoints_3d'), (PointCloud2, 'part_points')],
                                               self._on_frame, slop_s=0.0, queue_size=FRAME_QUEUE, qos=sensor_qos))
        self.images: deque[Image] = deque(maxlen=FRAME_QUEUE)
        if p.publish_overlay:
            self.camera_info = CameraInfoCache(self, qos=sensor_qos)
            self.create_subscription(Image, 'image', self.images.append, sensor_qos)
        self.create_service(ResetService, '~/reset', self._on_reset)
        self.worker = self.create_worker(self._fit, 'articulated fitting')

    def cleanup(self) -> None:
        self.fitter = None

    def on_parameter_change(self, name, value) -> None:
        with self.lock:
            if self.fitter is not None and name == 'min_confidence':
                self.fitter.config = replace(self.fitter.config, min_confidence=value)

    def _on_reset(self, request, response):
        with self.lock:
            self.fitter.reset()
        self.pub_markers.publish(marker_array([delete_all_marker(self.last_frame)]))
        response.success, response.message = True, 'tracking reset: new instance ids from the next frame'
        self.get_logger().info(response.message)
        return response

    def _on_frame(self, keypoints: KeypointArray, cloud: PointCloud2) -> None:
        self.sync_drops()
        if self.worker.submit((keypoints, cloud)):
            self.diagnostics.drop('busy')

    # -- one frame ---------------------------------------------------------------------------------------------
    def _fit(self, item) -> None:
        msg, cloud = item
        voted = self._voted(msg, cloud)
        with self.lock, self.diagnostics.timed('fit'):
            objects = self.fitter.fit(voted, stamp_to_ns(msg.header.stamp) / 1e9)
        for _ in range(len(voted) - len(objects)):
            self.diagnostics.drop('rejected')
        if len(objects) < len(voted):
            self.get_logger().info(f'{len(voted) - len(objects)} of {len(voted)} objects not fitted (too few '
                                   'keypoints or too little confidence)', throttle_duration_sec=5.0)
        self._publish(msg, objects)
        if self.p.publish_overlay:
            self._publish_overlay(msg, objects)

    def _voted(self, msg: KeypointArray, cloud: PointCloud2) -> list[VotedObject]:
        """The voting stage's objects as the message carries them; instances of categories the model does not know,
        unusable clouds and points of no instance's part are counted and logged, the rest goes on."""
        models = [self.categories.get(inst.class_id) for inst in msg.instances]
        for inst, model in zip(msg.instances, models):
            if model is None:
                self.diagnostics.drop('unknown_category')
                if inst.class_id not in self.unknown:
                    self.unknown.add(inst.class_id)
                    self.get_logger().warning(f'keypoints of category {inst.class_id!r} skipped: the model knows only '
                                              f'{", ".join(self.categories)}')
        counts = [len(m.parts) if m is not None else 0 for m in models]
        try:
            per_part, left_out = split_part_points(*part_points_from_cloud(cloud), counts)
        except ValueError as exc:
            self.diagnostics.drop('bad_part_points')
            self.get_logger().error(f'part_points unusable, fitting without them: {exc}', throttle_duration_sec=5.0)
            per_part, left_out = [(None,) * n for n in counts], 0
        if left_out:
            self.diagnostics.drop('bad_part_points')
            self.get_logger().warning(f'{left_out} part points belong to no instance or part of the keypoints of the '
                                      'same stamp (or are not finite): left out', throttle_duration_sec=5.0)
        voted = []
        for inst, model, points in zip(msg.instances, models, per_part):
            if model is None:
                continue
            kp, scores = instance_3d(inst, self.keypoint_names[model.category])
            found = np.isfinite(kp).all(axis=1) & np.isfinite(scores) & (scores > 0)
            P = len(model.parts)
            voted.append(VotedObject(
                model.category, np.where(found[:, None], kp, np.nan).reshape(P, 3, 3),
                np.where(found, scores, 0.0).reshape(P, 3), None,
                tuple(float(v) for v in bbox_xyxy(inst.bbox)), float(inst.score),
                sum(len(p) for p in points if p is not None), points))
        return voted

    # -- outputs ---------------------------------------------------------------------------------------------
    def _object_frames(self, objects: list[ArticulatedObject]) -> list[str]:
        """<prefix><category>_<instance id> of each object; objects without an id (root part not located) are
        numbered per frame as <category>_untracked<k>."""
        untracked: dict[str, int] = {}
        names = []
        for obj in objects:
            if obj.instance_id >= 0:
                names.append(f'{self.p.frame_prefix}{obj.category}_{obj.instance_id}')
            else:
                untracked[obj.category] = untracked.get(obj.category, -1) + 1
                names.append(f'{self.p.frame_prefix}{obj.category}_untracked{untracked[obj.category]}')
        return names

    def _publish(self, msg: KeypointArray, objects: list[ArticulatedObject]) -> None:
        header, frame = msg.header, msg.header.frame_id
        names = self._object_frames(objects)
        parts = [(obj, name, k) for obj, name in zip(objects, names) for k in np.flatnonzero(located(obj))]
        detections = Detection3DArray(header=header)
        for obj, name, k in parts:
            extents = obj.fit.extents[k]
            detections.detections.append(detection_3d(
                header, f'{obj.category}/{obj.part_names[k]}', float(obj.fit.confidence[k]), obj.T_cam_box[k],
                f'{name}/{obj.part_names[k]}', -extents / 2, extents))
        self.pub_detections.publish(detections)
        self.diagnostics.output('detections_3d')
        for obj, name in zip(objects, names):
            finite = np.flatnonzero(np.isfinite(obj.joint_values))
            if len(finite):
                joints = joint_state([f'{name}/{obj.joint_names[j]}' for j in finite], obj.joint_values[finite],
                                     header.stamp)
                joints.header.frame_id = frame
                self.pub_joints.publish(joints)
                self.diagnostics.output('joint_states')
        if not objects:
            return
        if not frame:
            self.get_logger().warning('keypoints_3d has no header.frame_id: no TF frames or markers',
                                      throttle_duration_sec=5.0)
            return
        if self.tf is not None and parts:
            self.tf.send([transform_stamped(frame, f'{name}/{obj.part_names[k]}', obj.T_cam_box[k], header.stamp)
                          for obj, name, k in parts])
        self.pub_markers.publish(marker_array(self._markers(objects, frame, header.stamp)))
        self.last_frame = frame

    def _markers(self, objects: list[ArticulatedObject], frame: str, stamp) -> list[Marker]:
        """Per located part its box and axes; per joint whose parent is located, its axis: the hinge line of a
        revolute joint (through the category's hinge point), an arrow from the child's box centre for a prismatic
        one."""
        markers, part_id, joint_id = [], 0, 0
        for obj in objects:
            fit, ok = obj.fit, located(obj)
            for k in np.flatnonzero(ok):
                markers.append(box_marker(fit.T_cam_box[k], fit.extents[k], frame, stamp, ns='part_boxes',
                                          marker_id=part_id))
                markers.append(axes_marker(fit.T_cam_box[k], frame, stamp, ns='part_axes', marker_id=part_id,
                                           length=max(float(fit.extents[k].max()) / 2, 0.01)))
                part_id += 1
            for joint in self.categories[obj.category].joints:
                line = joint_axis(joint, fit, ok)
                if line is None:
                    continue
                marker = skeleton_marker(line, [(0, 1)], frame, stamp, ns='joint_axes', marker_id=joint_id,
                                         rgba=JOINT_RGBA, width=0.006)
                if joint.type == 'prismatic':
                    marker.type = Marker.ARROW  # points: tail, head; scale: shaft and head diameters, head length
                    marker.scale.x, marker.scale.y, marker.scale.z = 0.008, 0.016, 0.02
                markers.append(marker)
                joint_id += 1
        return markers

    def _publish_overlay(self, msg: KeypointArray, objects: list[ArticulatedObject]) -> None:
        """The colour image of the same stamp with every object's region box and keypoints, and the projected box of
        each located part."""
        image = next((m for m in list(self.images) if m.header.stamp == msg.header.stamp), None)
        camera = self.camera_info.get(msg.header.frame_id) if image is not None else None
        if camera is None:
            return
        try:
            drawn = rgb8_from_msg(image)
        except ImageEncodingError as exc:
            self.get_logger().error(f'overlay: {exc}', throttle_duration_sec=5.0)
            return
        for inst in msg.instances:
            drawn = draw_box(drawn, bbox_xyxy(inst.bbox), REGION_COLOUR, f'{inst.class_id} {inst.score:.2f}',
                             thickness=1)
            names = self.keypoint_names.get(inst.class_id)
            if names:
                kp, scores = instance_3d(inst, names)
                drawn = draw_skeleton(drawn, camera.project(kp), [], KEYPOINT_COLOUR, valid=scores > 0, radius=3)
        for obj in objects:
            for k in np.flatnonzero(located(obj)):
                drawn = draw_box_3d(drawn, camera, obj.T_cam_box[k], obj.fit.extents[k],
                                    PART_COLOURS[k % len(PART_COLOURS)])
        self.pub_overlay.publish(array_to_image(drawn, 'rgb8', image.header))
        self.diagnostics.output('overlay')


def located(obj: ArticulatedObject) -> np.ndarray:
    """(P,) bool: the parts of an object with a pose and size to publish."""
    fit = obj.fit
    return np.asarray(fit.located, bool) & np.isfinite(fit.T_cam_box).all(axis=(1, 2)) \
        & np.isfinite(fit.extents).all(axis=1) & (fit.extents > 0).all(axis=1)


def joint_axis(joint, fit, ok: np.ndarray) -> np.ndarray | None:
    """(2, 3) camera-frame ends of a joint's axis marker, or None when the part it is drawn from is not located.
    Revolute: the hinge line through CategoryJoint.hinge (the parent's normalised space, so hinge x parent scale in
    its box frame) along the axis, as long as the parent's diagonal. Prismatic: from the child's box centre along
    the axis, half the child's diagonal long."""
    parent, child = joint.parent, joint.child
    if not ok[parent] or (joint.type == 'prismatic' and not ok[child]):
        return None
    T_parent = fit.T_cam_box[parent]
    axis = T_parent[:3, :3] @ np.asarray(joint.axis, float)
    if joint.type == 'prismatic':
        start = fit.T_cam_box[child][:3, 3]
        return np.array([start, start + axis * fit.scales[child] / 2])
    hinge = transform_points(T_parent, (np.asarray(joint.hinge, float) * fit.scales[parent])[None])[0]
    half = axis * fit.scales[parent] / 2
    return np.array([hinge - half, hinge + half])


def draw_box_3d(rgb: np.ndarray, camera: CameraModel, T_cam_box: np.ndarray, extents: np.ndarray,
                colour: tuple[int, int, int]) -> np.ndarray:
    """Copy of `rgb` with the 12 edges of a box of `extents` at T_cam_box projected (edges behind the camera left
    out)."""
    corners = camera.project(transform_points(T_cam_box, BOX_CORNERS * extents))
    return draw_skeleton(rgb, corners, BOX_EDGES, colour, radius=0)


def main(args=None):
    spin_node(ArticulatedFittingNode, args)


if __name__ == '__main__':
    main()
