"""Camera pose relative to the robot from its keypoints: joint angles (regressed, or the robot's own /joint_states
when fresh), forward kinematics, robust fitting, reprojection refinement (robot/pose.py); with known joints and
an aligned depth image, the robot's surface aligned with the depth (robot/depth_fit.py). Publishes the
per-frame estimate for the calibration manager, the arm's estimated joint states, RViz markers and a debug image."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np
from sensor_msgs.msg import Image, JointState
from visualization_msgs.msg import MarkerArray

from kp_pose_msgs.msg import KeypointArray, RobotCameraEstimate
from kp_pose_ros.core.draw import chain_edges, draw_skeleton
from kp_pose_ros.core.image_codec import ImageEncodingError
from kp_pose_ros.core.stamped_series import StampedSeries, interpolate_at
from kp_pose_ros.robot.depth_fit import RobotDepthFitter
from kp_pose_ros.robot.estimator import JOINT_MODES, EstimatorConfig, Observation, RobotCalibEstimator
from kp_pose_ros.robot.lifting import JointRegressor
from kp_pose_ros.robot.surface import GEOMETRY_KINDS, sample_robot_surface
from kp_pose_ros.robot.urdf import URDFError
from kp_pose_ros.ros.camera_info import CameraInfoCache
from kp_pose_ros.ros.diagnostics import OK, WARN
from kp_pose_ros.ros.images import array_to_image, depth_m_from_msg, rgb8_from_msg
from kp_pose_ros.ros.joint_states import joint_positions, joint_state
from kp_pose_ros.ros.keypoint_msgs import instance_2d, instance_3d
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.markers import keypoint_markers, marker_array, skeleton_marker
from kp_pose_ros.ros.models import inference_params, load_model
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.poses import pose_from_matrix
from kp_pose_ros.ros.qos import KEYPOINT_QUEUE, qos_profile, sensor_qos_params
from kp_pose_ros.ros.robot_model import RobotModelSource
from kp_pose_ros.ros.stamps import stamp_to_ns

# Joint states kept for pairing with images: the last 2 s (keypoints reach the fit up to a few hundred ms after their
# image), at most 20000 messages (10 kHz for 2 s).
JOINT_HISTORY_S = 2.0
JOINT_HISTORY_MAX = 20000
# Parameters that are EstimatorConfig fields of the same name.
ESTIMATOR_PARAMS = ('joints_mode', 'min_keypoint_confidence', 'inlier_threshold_m', 'reprojection_error_px',
                    'static_camera_frames', 'refine', 'depth_alignment', 'camera_moved_frames')


class RobotPoseFittingNode(PipelineNode):
    PARAMS = (
        Param('joints_model', 'robot_joints_panda.onnx', 'Joint-angle regression model (file in models/ or a path); '
              'its manifest names the keypoint links. Empty: none (known joints only).'),
        *inference_params(default_threads=1),
        Param('joints_mode', 'auto', 'known: use /joint_states; unknown: regress joints from the image; auto: known '
              'whenever a joint state within joint_states_max_age_s of the image exists.', live=True,
              choices=JOINT_MODES),
        Param('joint_states_max_age_s', 0.1, 'How far from the image stamp (after joint_states_offset_s) a joint '
              'state may be to count as fresh; the joints are interpolated between the states either side of it.',
              live=True, min_value=0.0, max_value=5.0),
        Param('joint_states_offset_s', 0.0, 'Joint-state clock minus camera clock: the joints are looked up at the '
              'image stamp plus this (e.g. a camera driver that stamps frames late by its exposure).', live=True,
              min_value=-1.0, max_value=1.0),
        Param('keypoint_links', [''], 'Links whose frame origins are the keypoints, in order; [""]: those named in '
              'the joint model\'s manifest.'),
        Param('urdf_path', '', 'Robot URDF file; empty: wait for the /robot_description topic.'),
        Param('base_link', 'panda_link0', 'Robot base frame: the parent of the calibration.'),
        Param('min_keypoint_confidence', 0.3, 'Keypoints below this confidence are treated as missing.', live=True,
              min_value=0.0, max_value=1.0),
        Param('inlier_threshold_m', 0.05, '3D-3D fit: keypoints farther than this from the model are outliers.',
              live=True, min_value=0.001, max_value=1.0),
        Param('reprojection_error_px', 15.0, 'PnP RANSAC inlier threshold (the committed keypoint model has p90 '
              'error 18 px).', live=True, min_value=0.5, max_value=100.0),
        Param('static_camera_frames', 30, 'Known joints: solve PnP over the keypoints of this many recent frames at '
              'once, assuming the camera does not move relative to the robot base (0: per frame, e.g. '
              'eye-in-hand).', live=True, min_value=0, max_value=1000),
        Param('camera_moved_frames', 3, 'Static window: after this many frames in a row whose keypoints disagree with '
              'the window\'s camera pose (and agree with their own), the camera counts as moved and the window '
              'restarts.', live=True, min_value=1, max_value=100),
        Param('refine', True, 'Refine the pose (and unknown joints) on the 2D reprojection error.', live=True),
        Param('depth_alignment', True, 'Known joints: align the robot\'s surface model (URDF meshes) with the '
              'aligned depth image on the `depth` topic; the pose then comes from the depth. Off, or no depth: '
              'keypoints only.'),
        Param('depth_max_offset_s', 0.02, 'How far apart the depth and colour stamps may be to pair them.',
              live=True, min_value=0.0, max_value=1.0),
        Param('surface_geometry', 'visual', 'URDF geometry the surface model is sampled from.',
              choices=GEOMETRY_KINDS),
        Param('surface_points', 3000, 'Points sampled over the robot\'s surface for the depth alignment.',
              min_value=200, max_value=50000),
        Param('publish_debug_image', False, 'Subscribe to the colour image and publish it with the skeleton drawn.'),
        *sensor_qos_params(what='image, depth and camera_info subscriptions'),
    )
    STREAMS = ('keypoints_3d', 'depth', 'camera_info', 'image')

    def __init__(self, **kwargs):
        super().__init__('robot_pose_fitting', **kwargs)
        self.regressor: JointRegressor | None = None
        self.kinematics = None
        self.estimator: RobotCalibEstimator | None = None
        # Held by each fit (worker thread) and by whatever replaces the robot model or the window (executor thread).
        self.fit_lock = threading.Lock()
        self.diagnostics.add_check(self._health)

    def configure(self) -> None:
        p = self.p
        if p.joints_model:
            self.regressor = load_model(self, JointRegressor, p.joints_model, 'joint-angle model')
        self.keypoint_names = tuple(k for k in p.keypoint_links if k) or (
            self.regressor.keypoint_links if self.regressor else ())
        if not self.keypoint_names:
            raise ConfigureError('no keypoint links: set keypoint_links or joints_model')
        self.kinematics = None
        self.estimator = None
        self.robot = RobotModelSource(self, p.urdf_path, p.base_link, self.keypoint_names, self._on_robot)
        if p.urdf_path and self.kinematics is None:
            raise ConfigureError(f'no usable robot model in urdf_path {p.urdf_path} (see the log above)')
        self.pub_estimate = self.create_publisher(RobotCameraEstimate, 'estimate', 10)
        self.pub_joints = self.create_publisher(JointState, 'joint_states', 10)
        self.pub_markers = self.create_publisher(MarkerArray, 'markers', 10)
        if p.publish_debug_image:
            self.pub_debug = self.create_publisher(Image, 'debug_image', 2)

    def activate(self) -> None:
        p = self.p
        self.last_estimate_ns: int | None = None
        self.depths: deque[Image] = deque(maxlen=10)
        self.images: deque[Image] = deque(maxlen=10)
        self.pending: KeypointArray | None = None
        with self.fit_lock:
            if self.estimator is not None:
                self.estimator.reset()
        # The last JOINT_HISTORY_S seconds of joint states, however fast the arm publishes them (1 kHz is common).
        self.joint_history = StampedSeries(int(JOINT_HISTORY_S * 1e9), JOINT_HISTORY_MAX)
        sensor_qos = qos_profile(p.qos_reliability, p.qos_depth)
        self.camera_info = CameraInfoCache(self, qos=sensor_qos)
        self.create_subscription(JointState, '/joint_states', self._on_joint_state, 50)
        self.create_subscription(KeypointArray, 'keypoints_3d', self._on_keypoints, KEYPOINT_QUEUE)
        if p.publish_debug_image:
            self.create_subscription(Image, 'image', self.images.append, sensor_qos)
        if p.depth_alignment:
            self.create_subscription(Image, 'depth', self._on_depth, sensor_qos)
        # The fit (tens of ms) runs off the executor, so joint states and depth images are taken as they arrive.
        self.worker = self.create_worker(self._estimate, 'pose fitting')

    def cleanup(self) -> None:
        self.regressor = None
        self.kinematics = None
        self.estimator = None

    def _estimator_config(self, **changed) -> EstimatorConfig:
        values = {name: getattr(self.p, name) for name in ESTIMATOR_PARAMS}
        values.update(changed)
        return EstimatorConfig(**values)

    def on_parameter_change(self, name, value) -> None:
        if name in ESTIMATOR_PARAMS:
            with self.fit_lock:
                if self.estimator is not None:
                    self.estimator.set_config(replace(self.estimator.config, **{name: value}))

    def _health(self):
        """WARN when no pose was estimated for 5 s while active (keypoints arriving or not)."""
        if self.state != 'active':
            return []
        if self.kinematics is None:
            return [(WARN, 'waiting for the robot model (/robot_description or urdf_path)')]
        if self.last_estimate_ns is None:
            return [(WARN, 'no pose estimated yet')]
        age = (self.get_clock().now().nanoseconds - self.last_estimate_ns) / 1e9
        if age > 5.0:
            return [(WARN, f'no pose estimated for {age:.0f} s', {'last_estimate_age_s': f'{age:.1f}'})]
        return [(OK, '', {'last_estimate_age_s': f'{age:.1f}'})]

    def _on_robot(self, robot: RobotModelSource) -> None:
        """A (new) robot model: its surface model and joint-model check are built first, then swapped in between two
        fits (the fit runs on the worker thread)."""
        kinematics, fitter, regressor = robot.kinematics, None, self.regressor
        if self.p.depth_alignment:
            try:
                surface = sample_robot_surface(robot.urdf_text, kinematics.link_names, robot.urdf_dir,
                                               robot.package_dir, self.p.surface_geometry,
                                               self.p.surface_points)
                fitter = RobotDepthFitter(surface, kinematics)
                for problem in surface.missing:
                    self.get_logger().warning(f'surface model: skipped {problem}')
                self.get_logger().info(f'depth alignment on: {len(surface.points)} surface points from the '
                                       f'{self.p.surface_geometry} geometry of {len(surface.link_names)} links')
            except (URDFError, ValueError, OSError) as exc:
                self.get_logger().error(f'depth alignment off: no surface model from the robot description ({exc})')
        if regressor is not None and (list(kinematics.joint_names) != list(regressor.joint_names)
                                      or tuple(regressor.keypoint_links) != self.keypoint_names):
            self.get_logger().error(f'the joint model ({regressor.joint_names}, keypoints '
                                    f'{regressor.keypoint_links}) does not fit this robot model '
                                    f'({kinematics.joint_names}, keypoints {self.keypoint_names}); only known-joints '
                                    'estimation is possible')
            regressor = None
        # A new robot model starts a new estimator: nothing learnt with the old one (window, last pose) carries over.
        estimator = RobotCalibEstimator(kinematics, self._estimator_config(), regressor, fitter)
        with self.fit_lock:
            self.kinematics, self.regressor, self.estimator = kinematics, regressor, estimator

    def _on_joint_state(self, msg: JointState) -> None:
        self.joint_history.add(stamp_to_ns(msg.header.stamp), msg)

    @staticmethod
    def _nearest(messages, stamp_ns: int, max_offset_s: float):
        """The message whose header stamp is nearest `stamp_ns`, if within `max_offset_s`; else None. list() takes a
        snapshot (atomically) of a deque the executor thread appends to."""
        nearest = min(list(messages), key=lambda m: abs(stamp_to_ns(m.header.stamp) - stamp_ns), default=None)
        if nearest is None or abs(stamp_to_ns(nearest.header.stamp) - stamp_ns) > max_offset_s * 1e9:
            return None
        return nearest

    def _measured_joints(self, stamp_ns: int) -> np.ndarray | None:
        """The joints at the image stamp (plus joint_states_offset_s), interpolated between the joint states either
        side of it; None when none is within joint_states_max_age_s (logged when joint states do arrive)."""
        if self.p.joints_mode == 'unknown':
            return None
        at = stamp_ns + int(self.p.joint_states_offset_s * 1e9)
        try:
            neighbours = [None if s is None else (s[0], joint_positions(s[1], self.kinematics.joint_names))
                          for s in self.joint_history.bracket(at)]
        except (KeyError, ValueError) as exc:
            self.get_logger().warning(f'/joint_states unusable: {exc}', throttle_duration_sec=5.0)
            return None
        joints = interpolate_at(at, *neighbours, int(self.p.joint_states_max_age_s * 1e9))
        if joints is None and len(self.joint_history) and self.p.joints_mode == 'auto':
            self.get_logger().warning('no /joint_states within joint_states_max_age_s of the image stamp (check the '
                                      'clocks and joint_states_offset_s); estimating the joints from the image',
                                      throttle_duration_sec=5.0)
        return joints

    def _on_depth(self, msg: Image) -> None:
        self.depths.append(msg)
        pending = self.pending
        if pending is not None and self._depth_for(pending) is not None:
            self.pending = None
            self._submit(pending)

    def _depth_for(self, msg) -> Image | None:
        return self._nearest(self.depths, stamp_to_ns(msg.header.stamp), self.p.depth_max_offset_s)

    def _on_keypoints(self, msg: KeypointArray) -> None:
        """Keypoints can overtake their depth image (ground truth, a fast detector): while the depth stream is live
        and has not passed this frame, the frame waits for its depth; one still waiting when the next arrives goes
        on without it."""
        if self.estimator is not None and self.estimator.depth_fitter is not None and self.depths \
                and self._depth_for(msg) is None \
                and stamp_to_ns(self.depths[-1].header.stamp) < stamp_to_ns(msg.header.stamp):
            previous, self.pending = self.pending, msg
            if previous is not None:
                self._submit(previous)
            return
        self._submit(msg)

    def _submit(self, msg: KeypointArray) -> None:
        if self.worker.submit(msg):
            self.diagnostics.drop('busy')

    def _estimate(self, msg: KeypointArray) -> None:
        """One frame, on the worker thread; the robot model and the window do not change during it."""
        with self.fit_lock:
            self._fit_frame(msg)

    def _fit_frame(self, msg: KeypointArray) -> None:
        if self.estimator is None or not msg.instances:
            return
        camera = self.camera_info.get(msg.header.frame_id)
        if camera is None:
            self.diagnostics.drop('no_camera_info')
            return
        started = time.perf_counter()
        inst = msg.instances[0]
        names = self.keypoint_names
        px, score2d = instance_2d(inst, names)
        pts, score3d = instance_3d(inst, names)
        lifted = score3d > 0
        measured = self._measured_joints(stamp_to_ns(msg.header.stamp))
        depth = self._depth_image(msg) if measured is not None and self.estimator.depth_fitter is not None else None
        result = self.estimator.estimate(Observation(
            camera, px, score2d, joints=measured, depth_m=depth,
            lifted=pts if lifted.any() else None, lifted_scores=score3d if lifted.any() else None))
        self.diagnostics.latency('fit', (time.perf_counter() - started) * 1e3)
        for stage, ms in result.stage_ms.items():
            if stage != 'total':
                self.diagnostics.latency(stage, ms)
        if 'window_reset' in result.events:
            self.get_logger().warning('the keypoints disagree with the static-camera window\'s pose over '
                                      f'{self.p.camera_moved_frames} frames: the camera moved; window restarted')
        if result.depth_problem is not None:
            self.diagnostics.drop(result.depth_problem)
            self.get_logger().warning(result.message, throttle_duration_sec=2.0)
        if not result.success:
            self.diagnostics.drop(result.skipped)
            self.get_logger().warning(f'{result.message}; skipping frame', throttle_duration_sec=2.0)
            return
        self._publish(msg, result.estimate, names, px, result.aligned)
        self.last_estimate_ns = self.get_clock().now().nanoseconds

    def _depth_image(self, msg) -> np.ndarray | None:
        """The depth image (metres) paired with the keypoints' image, or None (logged) when there is none."""
        depth_msg = self._depth_for(msg)
        if depth_msg is None:
            self.diagnostics.drop('no_depth')
            self.get_logger().warning('no depth image within depth_max_offset_s of the colour image; keypoints only',
                                      throttle_duration_sec=5.0)
            return None
        try:
            return depth_m_from_msg(depth_msg)
        except ImageEncodingError as exc:
            self.diagnostics.drop('bad_depth')
            self.get_logger().error(f'depth image unusable: {exc}', throttle_duration_sec=5.0)
            return None

    def _publish(self, msg, estimate, names, px, aligned) -> None:
        stamp, optical = msg.header.stamp, msg.header.frame_id
        out = RobotCameraEstimate(camera_frame=optical, pose=pose_from_matrix(estimate.T_base_cam),
                                  joint_names=list(self.kinematics.joint_names),
                                  joint_positions=[float(v) for v in estimate.joints],
                                  known_joints=estimate.known_joints, keypoint_names=list(names),
                                  residuals_px=[float(r) for r in estimate.residuals_px],
                                  inliers=[bool(v) for v in estimate.inliers],
                                  mean_residual_px=estimate.mean_residual_px,
                                  depth_aligned=aligned is not None,
                                  depth_rms_m=aligned.rms_m if aligned is not None else float('nan'),
                                  depth_coverage=aligned.coverage if aligned is not None else 0.0)
        out.header.stamp, out.header.frame_id = stamp, self.p.base_link
        self.pub_estimate.publish(out)
        self.diagnostics.output('estimate')
        self.pub_joints.publish(joint_state(self.kinematics.joint_names, estimate.joints, stamp))
        model_cam = estimate.keypoints_cam
        edges = chain_edges(len(names))
        self.pub_markers.publish(marker_array(
            keypoint_markers(model_cam, optical, stamp, ns='robot_keypoints', rgba=(0.1, 0.9, 0.2, 1.0), scale=0.03,
                             names=list(names))
            + [skeleton_marker(model_cam, edges, optical, stamp, ns='robot_skeleton', rgba=(0.1, 0.9, 0.2, 1.0))]))
        if self.p.publish_debug_image:
            self._publish_debug(msg, estimate, px, edges)

    def _publish_debug(self, msg, estimate, px, edges) -> None:
        image = next((m for m in list(self.images) if m.header.stamp == msg.header.stamp), None)
        if image is None:
            return
        try:
            rgb = rgb8_from_msg(image)
        except ImageEncodingError as exc:
            self.get_logger().error(f'debug image: {exc}', throttle_duration_sec=5.0)
            return
        camera = self.camera_info.get(msg.header.frame_id)
        drawn = draw_skeleton(rgb, px, [], (255, 60, 60), radius=6)
        drawn = draw_skeleton(drawn, camera.project(estimate.keypoints_cam), edges, (40, 230, 60), radius=3)
        self.pub_debug.publish(array_to_image(drawn, 'rgb8', image.header))


def main(args=None):
    spin_node(RobotPoseFittingNode, args)


if __name__ == '__main__':
    main()
