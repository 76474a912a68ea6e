"""Turns per-frame camera-to-robot estimates into a calibration people can trust and keep.

live mode: every estimate enters a sliding window; its robust aggregate is published on /tf as base -> camera root
frame until a calibration is computed or loaded, which is then published instead (still on /tf, so that reset can
return to the live estimate: a latched /tf_static transform cannot be retracted). Services capture samples (for a
deliberate set of robot poses), compute, save (YAML, atomic), load and reset.
static mode: publishes a saved calibration on /tf_static and nothing else (include calibration_publisher.launch.py
in a robot's bringup).
The calibration is published to the camera's root frame (e.g. camera_link) by composing with the driver's static
root -> optical transform from /tf_static, so the driver's own TF subtree hangs under the robot base.
Every transform on /tf carries a newer stamp than the last one sent (tf2 listeners warn TF_REPEATED_DATA and drop a
repeated one): the live aggregate goes out only when newer estimates came, stamped with the newest estimate's stamp;
a fixed calibration is restamped with the current time each period and skipped while the clock stands still.
Trust: a calibration is computed only when its ~95 % uncertainty bound, counting each arm configuration as one
independent view (robot/calibration.py), is within limits; the compute response and /diagnostics say how diverse the
captured views are (robot/capture_guidance.py). With a calibration fixed, the live estimates keep being aggregated
and compared with it (drift): OK within both uncertainties, WARN beyond, ERROR beyond drift_error_ratio times that."""
from __future__ import annotations

import math
import os

import numpy as np
from geometry_msgs.msg import TransformStamped
from std_msgs.msg import String

from kp_pose_msgs.msg import RobotCameraEstimate
from kp_pose_msgs.srv import CaptureSample, ComputeCalibration, LoadCalibration, ResetCalibration, SaveCalibration
from kp_pose_ros.core.transform_tree import TransformTree
from kp_pose_ros.robot.calibration import (
    SYSTEMATIC_ROTATION_DEG,
    SYSTEMATIC_TRANSLATION_M,
    CalibrationError,
    CalibrationResult,
    CalibrationSample,
    CalibrationWindow,
    aggregate,
    compose_root,
)
from kp_pose_ros.robot.calibration_store import (
    CalibrationFileError,
    drift,
    load_calibration,
    save_calibration,
    uncertainty_block,
)
from kp_pose_ros.robot.capture_guidance import CaptureGuidance, capture_guidance, joint_limit_candidates
from kp_pose_ros.robot.urdf import URDFError, parse_urdf
from kp_pose_ros.ros.diagnostics import ERROR, OK, WARN
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.poses import matrix_from_pose
from kp_pose_ros.ros.qos import LATCHED_QOS
from kp_pose_ros.ros.stamps import ns_to_stamp, stamp_to_ns
from kp_pose_ros.ros.tf import StaticTfBroadcaster, TfBroadcaster, TfListener, transform_from_msg, transform_stamped


class CalibrationManagerNode(PipelineNode):
    PARAMS = (
        Param('mode', 'live', 'live: calibrate from the estimate stream; static: publish a saved calibration only.',
              choices=('live', 'static')),
        Param('calibration_dir', '~/.ros/kp_pose_ros/calibrations', 'Where calibrations are saved and looked up.'),
        Param('calibration_name', 'default', 'Name loaded in static mode and used by save when none is given.',
              live=True),
        Param('root_frame', 'camera_link', 'Camera frame the calibration is published to (the driver\'s TF root); '
              'empty: the optical frame of the images.'),
        Param('window_size', 30, 'Per-frame estimates in the live window.', live=True, min_value=1, max_value=10000),
        Param('min_samples', 10, 'Fewest estimates an aggregate is computed from.', live=True, min_value=1,
              max_value=10000),
        Param('max_residual_px', 15.0, 'Estimates whose mean keypoint reprojection residual exceeds this are '
              'ignored.', live=True, min_value=0.1, max_value=1000.0),
        Param('max_translation_std_m', 0.05, 'A live aggregate or computed calibration whose inlier spread exceeds '
              'this is not published: a wrong TF is worse than none for a grasping stack.', live=True,
              min_value=0.0, max_value=10.0),
        Param('max_rotation_std_deg', 5.0, 'The same bound on the rotation spread.', live=True, min_value=0.0,
              max_value=180.0),
        Param('configuration_tolerance_rad', 0.1, 'Estimates whose joint positions all lie within this of an arm '
              'configuration\'s first estimate belong to it: one view, sharing one detector bias.', live=True,
              min_value=0.0, max_value=10.0),
        Param('systematic_translation_m', SYSTEMATIC_TRANSLATION_M, 'Error no number of views averages away (the '
              'estimator\'s own bias: surface model against the depth, depth scale, depth-to-colour registration), '
              'added in quadrature to the uncertainty bound. Default: the largest RGB-D calibration error measured '
              'on development sequences with realistic depth sensors, rounded up.', live=True, min_value=0.0,
              max_value=1.0),
        Param('systematic_rotation_deg', SYSTEMATIC_ROTATION_DEG, 'The same for the rotation.', live=True,
              min_value=0.0, max_value=45.0),
        Param('max_translation_uncertainty_m', 0.02, 'Compute refuses a calibration whose ~95 % translation bound '
              '(view bias included, each arm configuration one draw) exceeds this. Estimates without joint '
              'positions have no bound and are judged on the spread limits alone.', live=True, min_value=0.0,
              max_value=10.0),
        Param('max_rotation_uncertainty_deg', 2.0, 'The same bound on the rotation.', live=True, min_value=0.0,
              max_value=180.0),
        Param('drift_min_translation_m', 0.005, 'Drift of the live estimate from a fixed calibration: the smallest '
              'translation tolerance, whatever the uncertainties say.', live=True, min_value=0.0, max_value=1.0),
        Param('drift_min_rotation_deg', 0.5, 'The smallest rotation tolerance of the drift check.', live=True,
              min_value=0.0, max_value=90.0),
        Param('drift_error_ratio', 2.0, 'Drift diagnostics: WARN beyond the tolerance, ERROR beyond this many '
              'times it (the camera has moved: recalibrate).', live=True, min_value=1.0, max_value=100.0),
        Param('publish_period_s', 0.5, 'How often the live aggregate is recomputed and published on /tf.',
              live=True, min_value=0.01, max_value=60.0),
        Param('max_estimate_age_s', 5.0, 'Diagnostics: WARN when the newest usable estimate is older than this '
              '(live mode, nothing computed or loaded).', live=True, min_value=0.1, max_value=3600.0),
    )
    STREAMS = ('estimate',)

    def __init__(self, **kwargs):
        super().__init__('calibration_manager', **kwargs)
        self.fixed: TransformStamped | None = None
        self.fixed_result = None
        self.diagnostics.add_check(self._health)
        self.diagnostics.add_check(self._capture_health)

    def configure(self) -> None:
        p = self.p
        self.directory = os.path.expanduser(p.calibration_dir)
        self.pub_calibration = self.create_publisher(TransformStamped, '~/calibration', LATCHED_QOS)
        self.fixed = None
        self.fixed_result = None
        self.fixed_uncertainty: dict | None = None  # the fixed calibration's uncertainty block (drift reference)
        self.drift = None
        if p.mode == 'static':
            self.static_tf = StaticTfBroadcaster(self)
            ok, text = self._load_into_fixed(self.directory, p.calibration_name)
            if not ok:
                raise ConfigureError(f'static mode needs a saved calibration: {text}')
            return
        self.tf = TfBroadcaster(self)
        self.tree = TransformTree()
        self.tf_listener = TfListener(self, self.tree)
        self.live = CalibrationWindow(p.window_size)
        self.captured = CalibrationWindow(10000)
        self.latest: RobotCameraEstimate | None = None
        self.live_result = None
        self.joint_limits: dict[str, tuple[float, float]] = {}  # from /robot_description: name -> (lower, upper)
        self.aggregated_ns = -1  # newest estimate stamp the last live aggregate included
        self.tf_stamp_ns = -1  # stamp of the transform last sent on /tf
        self.pub_live = self.create_publisher(TransformStamped, '~/live_calibration', 10)

    def activate(self) -> None:
        if self.p.mode == 'static':
            return
        self.create_subscription(RobotCameraEstimate, 'estimate', self._on_estimate, 10)
        self.create_subscription(String, '/robot_description', self._on_description, LATCHED_QOS)
        self.create_service(CaptureSample, '~/capture', self._capture)
        self.create_service(ComputeCalibration, '~/compute', self._compute)
        self.create_service(SaveCalibration, '~/save', self._save)
        self.create_service(LoadCalibration, '~/load', self._load)
        self.create_service(ResetCalibration, '~/reset', self._reset)
        self.timer = self.create_timer(self.p.publish_period_s, self._publish_live)

    def on_parameter_change(self, name, value) -> None:
        if self.state not in ('inactive', 'active') or self.p.mode != 'live':
            return
        if name == 'window_size':
            window = CalibrationWindow(int(value))
            for sample in self.live.samples:
                window.add(sample)
            self.live = window
        elif name == 'publish_period_s' and self.state == 'active':
            self.timer.timer_period_ns = int(float(value) * 1e9)

    def _health(self):
        """Calibration health: with a calibration fixed, its drift (_drift_status); else OK while the live aggregate
        is published, WARN when the estimates are too spread to publish, or the newest usable estimate is older than
        max_estimate_age_s. The live uncertainty is reported, not judged: one view gives no bound by nature."""
        if self.state not in ('inactive', 'active'):
            return []
        if self.p.mode == 'static':
            return [(OK, '', {'calibration': 'fixed (loaded)'})]
        if self.fixed is not None:
            return [self._drift_status()]
        if self.latest is None:
            return [(WARN if self.state == 'active' else OK, 'no estimate received yet' if self.state == 'active'
                     else '')]
        values = {'live_samples': str(len(self.live))}
        age = (self.get_clock().now().nanoseconds - self._latest_received_ns) / 1e9
        values['last_estimate_age_s'] = f'{age:.1f}'
        result = self.live_result
        if result is not None:
            values['spread_cm'] = f'{result.translation_std_m * 100:.2f}'
            values['spread_deg'] = f'{result.rotation_std_deg:.2f}'
            values['live_configurations'] = str(result.num_configurations)
            values['live_uncertainty_cm'] = f'{result.translation_uncertainty_m * 100:.2f}'
            values['live_uncertainty_deg'] = f'{result.rotation_uncertainty_deg:.2f}'
        if age > self.p.max_estimate_age_s:
            return [(WARN, f'no usable estimate for {age:.0f} s', values)]
        if result is not None and self._too_spread(result):
            return [(WARN, 'live estimates too spread to publish', values)]
        return [(OK, '', values)]

    def _drift_status(self):
        """Drift of the live estimate from the fixed calibration: OK within the tolerance (both uncertainties), WARN
        beyond it, ERROR beyond drift_error_ratio times it."""
        values = {'calibration': 'fixed (computed or loaded)'}
        d = self.drift
        if d is None:
            values['drift'] = 'waiting for live estimates'
            return OK, '', values
        values.update(drift_cm=f'{d.translation_m * 100:.2f}', drift_deg=f'{d.rotation_deg:.2f}',
                      drift_tolerance_cm=f'{d.translation_tolerance_m * 100:.2f}',
                      drift_tolerance_deg=f'{d.rotation_tolerance_deg:.2f}', drift_ratio=f'{d.ratio:.2f}')
        if d.ratio <= 1.0:
            return OK, '', values
        text = (f'live estimate {d.translation_m * 100:.1f} cm, {d.rotation_deg:.1f} deg from the calibration '
                f'(tolerance {d.translation_tolerance_m * 100:.1f} cm, {d.rotation_tolerance_deg:.1f} deg)')
        if d.ratio > self.p.drift_error_ratio:
            return ERROR, f'{text}: the camera has moved, recalibrate', values
        return WARN, text, values

    def _capture_health(self):
        """Capture guidance for the samples compute would use, as values (never a problem by itself)."""
        if self.state not in ('inactive', 'active') or self.p.mode != 'live':
            return []
        guidance = self._guidance(self._compute_source().samples)
        if guidance is None:
            return []
        return [(OK, '', {'capture_configurations': str(guidance.num_configurations),
                          'capture_least_varied_joints': ', '.join(guidance.least_varied_joints[:3]),
                          'capture_advice': guidance.summary()})]

    def _guidance(self, samples) -> CaptureGuidance | None:
        """How diverse the samples' arm configurations are; None when they carry no joint positions."""
        joints = [s.joint_positions for s in samples if s.joint_positions is not None]
        names = tuple(self.latest.joint_names) if self.latest is not None else ()
        size = len(names) if names else (len(joints[-1]) if joints else 0)
        joints = [j for j in joints if len(j) == size]
        if not joints:
            return None
        limits = [self.joint_limits[n] for n in names if n in self.joint_limits]
        candidates = joint_limit_candidates(*zip(*limits)) if limits and len(limits) == size else None
        return capture_guidance(joints, names if len(names) == size else (), candidates=candidates,
                                num_suggestions=1, tolerance_rad=self.p.configuration_tolerance_rad)

    def _on_description(self, msg: String) -> None:
        """Joint limits from the robot description: capture guidance then suggests the next arm pose."""
        try:
            joints = parse_urdf(msg.data).joints.values()
        except (URDFError, ValueError) as exc:
            self.get_logger().warning(f'robot_description unusable for pose suggestions: {exc}')
            return
        self.joint_limits = {j.name: (j.limits.lower, j.limits.upper) for j in joints if j.limits is not None
                             and math.isfinite(j.limits.lower) and math.isfinite(j.limits.upper)
                             and j.limits.upper > j.limits.lower}

    # -- estimates ------------------------------------------------------------------------------------------------
    def _sample(self, msg: RobotCameraEstimate) -> CalibrationSample:
        residuals = np.array([r if ok else np.nan for r, ok in zip(msg.residuals_px, msg.inliers)], dtype=float)
        return CalibrationSample(stamp_to_ns(msg.header.stamp), matrix_from_pose(msg.pose),
                                 weight=max(1.0, float(np.count_nonzero(msg.inliers))),
                                 residuals_px=residuals,
                                 keypoint_names=tuple(msg.keypoint_names) if msg.keypoint_names else None,
                                 joint_positions=np.asarray(msg.joint_positions) if len(msg.joint_positions) else None)

    def _on_estimate(self, msg: RobotCameraEstimate) -> None:
        if not math.isfinite(msg.mean_residual_px) or msg.mean_residual_px > self.p.max_residual_px:
            self.get_logger().warning(f'ignoring an estimate with mean residual {msg.mean_residual_px:.1f} px '
                                      f'(max_residual_px {self.p.max_residual_px:g})', throttle_duration_sec=5.0)
            return
        try:
            self.live.add(self._sample(msg))
        except ValueError as exc:
            self.get_logger().warning(f'ignoring an unusable estimate: {exc}', throttle_duration_sec=5.0)
            return
        self.latest = msg
        self._latest_received_ns = self.get_clock().now().nanoseconds

    def _root_transform(self, base: str, T_base_optical: np.ndarray, optical: str, stamp) -> TransformStamped | None:
        """base -> root_frame (or base -> optical when root_frame is empty)."""
        if not self.p.root_frame:
            return transform_stamped(base, optical, T_base_optical, stamp)
        try:
            T_root_optical = self.tree.lookup(self.p.root_frame, optical)
        except LookupError as exc:
            self.get_logger().warning(f'cannot publish to {self.p.root_frame}: {exc} (is the camera driver publishing '
                                      f'/tf_static?)', throttle_duration_sec=5.0)
            return None
        return transform_stamped(base, self.p.root_frame, compose_root(T_base_optical, T_root_optical), stamp)

    def _too_spread(self, result) -> str:
        """Why `result` must not be published ('' when it may)."""
        if result.translation_std_m > self.p.max_translation_std_m \
                or result.rotation_std_deg > self.p.max_rotation_std_deg:
            return (f'estimates disagree too much: spread {result.translation_std_m * 100:.1f} cm, '
                    f'{result.rotation_std_deg:.1f} deg (limits {self.p.max_translation_std_m * 100:g} cm, '
                    f'{self.p.max_rotation_std_deg:g} deg); move the robot through more poses or check the camera')
        return ''

    def _too_uncertain(self, result: CalibrationResult, samples) -> str:
        """Why a computed `result` must not be used ('' when it may): its view-aware bound exceeds the limits.
        Samples without joint positions cannot be told apart by view, so for them only the spread limits hold."""
        if all(s.joint_positions is None for s in samples):
            return ''
        t, r = result.translation_uncertainty_m, result.rotation_uncertainty_deg
        if t > self.p.max_translation_uncertainty_m or r > self.p.max_rotation_uncertainty_deg:
            return (f'uncertainty {_bound_text(t, r)} from {result.num_configurations} arm configurations (limits '
                    f'{self.p.max_translation_uncertainty_m * 100:g} cm, {self.p.max_rotation_uncertainty_deg:g} deg): '
                    'frames of one view share its bias; capture more distinct arm poses')
        return ''

    def _send_tf(self, msg: TransformStamped) -> bool:
        """Send `msg` on /tf if its stamp is newer than the last one sent: tf2 listeners warn (TF_REPEATED_DATA)
        about and drop a repeated stamp."""
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp <= self.tf_stamp_ns:
            return False
        self.tf.send(msg)
        self.tf_stamp_ns = stamp
        return True

    def _publish_live(self) -> None:
        if self.fixed is not None:
            self.fixed.header.stamp = self.get_clock().now().to_msg()
            self._send_tf(self.fixed)  # skipped while the clock stands still (a paused simulation)
        result, msg = self._aggregate_live()
        if msg is None:
            return
        if self.fixed is not None:
            self._update_drift(result, msg)
            return
        reason = self._too_spread(result)
        if reason:
            self.get_logger().warning(f'not publishing the live calibration: {reason}', throttle_duration_sec=5.0)
        elif self._send_tf(msg):
            self.pub_live.publish(msg)
        elif self.tf_stamp_ns - stamp_to_ns(msg.header.stamp) > 1e9:  # beyond the usual pipeline latency
            self.get_logger().warning('live estimates are over 1 s older than the transform last sent on /tf (a '
                                      'calibration published at the current time, or a bag replayed without '
                                      'use_sim_time): waiting for newer ones', throttle_duration_sec=10.0)

    def _aggregate_live(self) -> tuple[CalibrationResult | None, TransformStamped | None]:
        """The live window's aggregate and its base -> root transform stamped with the newest estimate's stamp;
        (None, None) unless estimates newer than the last aggregate's came."""
        samples = self.live.samples
        newest = max((s.stamp_ns for s in samples), default=-1)
        if self.latest is None or len(samples) < self.p.min_samples or newest <= self.aggregated_ns:
            return None, None
        self.aggregated_ns = newest
        try:
            self.live_result = aggregate(samples, min_samples=self.p.min_samples, **self._uncertainty_settings())
        except CalibrationError as exc:
            self.get_logger().warning(f'live window not consistent: {exc}', throttle_duration_sec=5.0)
            return None, None
        return self.live_result, self._root_transform(self.latest.header.frame_id, self.live_result.T_base_cam,
                                                      self.latest.camera_frame, ns_to_stamp(newest))

    def _update_drift(self, result: CalibrationResult, msg: TransformStamped) -> None:
        """Compare the live aggregate with the fixed calibration, when both are the same pair of frames."""
        fixed = self.fixed
        if (msg.header.frame_id, msg.child_frame_id) != (fixed.header.frame_id, fixed.child_frame_id):
            self.get_logger().warning(f'no drift check: the live estimate is {msg.header.frame_id} -> '
                                      f'{msg.child_frame_id}, the calibration {fixed.header.frame_id} -> '
                                      f'{fixed.child_frame_id}', throttle_duration_sec=30.0)
            return
        self.drift = drift(transform_from_msg(fixed), self.fixed_uncertainty, transform_from_msg(msg), result,
                           min_translation_m=self.p.drift_min_translation_m,
                           min_rotation_deg=self.p.drift_min_rotation_deg)

    # -- services ---------------------------------------------------------------------------------------------------
    def _capture(self, request, response):
        if self.latest is None:
            response.success, response.message = False, 'no estimate received yet'
        else:
            self.captured.add(self._sample(self.latest))
            response.success, response.message = True, 'captured the latest estimate'
        response.num_samples = len(self.captured)
        return response

    def _uncertainty_settings(self) -> dict:
        return {'configuration_tolerance_rad': self.p.configuration_tolerance_rad,
                'systematic_translation_m': self.p.systematic_translation_m,
                'systematic_rotation_deg': self.p.systematic_rotation_deg}

    def _compute_source(self) -> CalibrationWindow:
        return self.captured if len(self.captured) else self.live

    def _compute(self, request, response):
        source = self._compute_source()
        samples = source.samples
        min_samples = request.min_samples or self.p.min_samples
        response.num_samples = len(samples)
        if self.latest is None:
            response.success, response.message = False, 'no estimate received yet'
            return response
        guidance = self._guidance(samples)
        advice = f' Capture: {guidance.summary()}.' if guidance is not None else ''
        try:
            result = aggregate(samples, min_samples=min_samples, **self._uncertainty_settings())
        except CalibrationError as exc:
            response.success, response.message = False, f'{exc}.{advice}'
            return response
        response.translation_std_m = float(result.translation_std_m)
        response.rotation_std_deg = float(result.rotation_std_deg)
        response.num_inliers = result.num_inliers
        known = guidance is not None
        response.translation_uncertainty_m = float(result.translation_uncertainty_m) if known else math.nan
        response.rotation_uncertainty_deg = float(result.rotation_uncertainty_deg) if known else math.nan
        response.num_configurations = result.num_configurations if known else 0
        reason = self._too_spread(result) or self._too_uncertain(result, samples)
        if reason:
            response.success, response.message = False, f'not calibrated: {reason}.{advice}'
            return response
        msg = self._root_transform(self.latest.header.frame_id, result.T_base_cam, self.latest.camera_frame,
                                   self.get_clock().now().to_msg())
        if msg is None:
            response.success, response.message = False, f'no transform {self.p.root_frame} -> ' \
                                                        f'{self.latest.camera_frame} on /tf_static yet'
            return response
        self.fixed_result = result
        self._set_fixed(msg, uncertainty_block(result))
        kind = 'captured' if source is self.captured else 'live-window'
        bound = ('unknown (the estimates carry no joint positions)' if guidance is None else
                 f'{_bound_text(result.translation_uncertainty_m, result.rotation_uncertainty_deg)} (95 %, '
                 f'{result.num_configurations} arm configurations)')
        response.success = True
        response.message = (f'calibrated from {result.num_inliers}/{result.num_samples} {kind} samples: '
                            f'spread {result.translation_std_m * 100:.2f} cm, {result.rotation_std_deg:.2f} deg; '
                            f'uncertainty {bound}.{advice}')
        response.transform = msg
        response.mean_reprojection_error_px = float(result.mean_residual_px)
        self.get_logger().info(response.message)
        return response

    def _set_fixed(self, msg: TransformStamped, uncertainty: dict | None) -> None:
        self.fixed = msg
        self.fixed_uncertainty = uncertainty
        self.drift = None
        if self.p.mode == 'static':
            self.static_tf.send(msg)
        else:
            self.aggregated_ns = -1  # the drift check starts from the live window as it is
            self._send_tf(msg)
        self.pub_calibration.publish(msg)

    def _save(self, request, response):
        if self.fixed is None:
            response.success, response.message = False, 'nothing to save: compute or load a calibration first'
            return response
        try:
            path = save_calibration(os.path.expanduser(request.directory) or self.directory,
                                    request.name or self.p.calibration_name, transform_from_msg(self.fixed),
                                    self.fixed.header.frame_id, self.fixed.child_frame_id,
                                    result=self.fixed_result,
                                    metadata={'optical_frame': self.latest.camera_frame} if self.latest else None)
        except (ValueError, OSError) as exc:
            response.success, response.message = False, f'not saved: {exc}'
            return response
        response.success, response.message, response.path = True, f'saved to {path}', str(path)
        self.get_logger().info(response.message)
        return response

    def _load_into_fixed(self, path: str, name: str | None) -> tuple[bool, str]:
        try:
            stored = load_calibration(path, name)
        except (FileNotFoundError, CalibrationFileError, ValueError) as exc:
            self.get_logger().error(f'cannot load calibration: {exc}')
            return False, str(exc)
        msg = transform_stamped(stored.parent_frame, stored.child_frame, stored.transform,
                                self.get_clock().now().to_msg())
        self.fixed_result = None
        self._set_fixed(msg, stored.uncertainty)
        text = (f'publishing calibration {stored.name} ({stored.parent_frame} -> {stored.child_frame}) from '
                f'{stored.path}')
        self.get_logger().info(text)
        return True, text

    def _load(self, request, response):
        if request.path:
            ok, text = self._load_into_fixed(os.path.expanduser(request.path), None)
        else:
            ok, text = self._load_into_fixed(self.directory, request.name or self.p.calibration_name)
        response.success, response.message = ok, text
        if ok:
            response.transform = self.fixed
        return response

    def _reset(self, request, response):
        self.live.clear()
        self.captured.clear()
        self.fixed = None
        self.fixed_result = None
        self.fixed_uncertainty = None
        self.drift = None
        self.live_result = None
        self.aggregated_ns = -1
        response.success, response.message = True, 'cleared samples and calibration; publishing the live estimate'
        return response


def _bound_text(translation_m: float, rotation_deg: float) -> str:
    if math.isinf(translation_m) or math.isinf(rotation_deg):
        return 'unbounded (one arm configuration)'
    return f'{translation_m * 100:.1f} cm, {rotation_deg:.1f} deg'


def main(args=None):
    spin_node(CalibrationManagerNode, args)


if __name__ == '__main__':
    main()
