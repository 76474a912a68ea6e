"""Turns per-frame camera-to-robot estimates into a calibration people can trust and keep.

live mode: every estimate enters a sliding window; its robust aggregate is published on /tf as base -> camera root
frame until a calibration is computed or loaded, which is then published instead (still on /tf, so that reset can
return to the live estimate: a latched /tf_static transform cannot be retracted). Services capture samples (for a
deliberate set of robot poses), compute, save (YAML, atomic), load and reset.
static mode: publishes a saved calibration on /tf_static and nothing else (include calibration_publisher.launch.py
in a robot's bringup).
The calibration is published to the camera's root frame (e.g. camera_link) by composing with the driver's static
root -> optical transform from /tf_static, so the driver's own TF subtree hangs under the robot base."""
from __future__ import annotations

import math
import os

import numpy as np
from geometry_msgs.msg import TransformStamped

from kp_pose_msgs.msg import RobotCameraEstimate
from kp_pose_msgs.srv import CaptureSample, ComputeCalibration, LoadCalibration, ResetCalibration, SaveCalibration
from kp_pose_ros.core.transform_tree import TransformTree
from kp_pose_ros.robot.calibration import (
    CalibrationError,
    CalibrationSample,
    CalibrationWindow,
    aggregate,
    compose_root,
)
from kp_pose_ros.robot.calibration_store import CalibrationFileError, load_calibration, save_calibration
from kp_pose_ros.ros.diagnostics import OK, WARN
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.poses import matrix_from_pose
from kp_pose_ros.ros.qos import LATCHED_QOS
from kp_pose_ros.ros.stamps import stamp_to_ns
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

    def configure(self) -> None:
        p = self.p
        self.directory = os.path.expanduser(p.calibration_dir)
        self.pub_calibration = self.create_publisher(TransformStamped, '~/calibration', LATCHED_QOS)
        self.fixed = None
        self.fixed_result = None
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
        self.published_stamp = None  # stamp of the live transform last sent on /tf
        self.pub_live = self.create_publisher(TransformStamped, '~/live_calibration', 10)

    def activate(self) -> None:
        if self.p.mode == 'static':
            return
        self.create_subscription(RobotCameraEstimate, 'estimate', self._on_estimate, 10)
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
        """Calibration health: OK while a calibration is fixed or the live aggregate is published; WARN when the
        estimates are too spread to publish, or the newest usable estimate is older than max_estimate_age_s."""
        if self.state not in ('inactive', 'active'):
            return []
        if self.p.mode == 'static' or self.fixed is not None:
            return [(OK, '', {'calibration': 'fixed (computed or loaded)'})]
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
        if age > self.p.max_estimate_age_s:
            return [(WARN, f'no usable estimate for {age:.0f} s', values)]
        if result is not None and self._too_spread(result):
            return [(WARN, 'live estimates too spread to publish', values)]
        return [(OK, '', values)]

    # -- estimates ------------------------------------------------------------------------------------------------
    def _sample(self, msg: RobotCameraEstimate) -> CalibrationSample:
        residuals = np.array([r if ok else np.nan for r, ok in zip(msg.residuals_px, msg.inliers)], dtype=float)
        return CalibrationSample(stamp_to_ns(msg.header.stamp), matrix_from_pose(msg.pose),
                                 weight=max(1.0, float(np.count_nonzero(msg.inliers))),
                                 residuals_px=residuals,
                                 keypoint_names=tuple(msg.keypoint_names) if msg.keypoint_names else None)

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

    def _publish_live(self) -> None:
        if self.fixed is not None:
            self.fixed.header.stamp = self.get_clock().now().to_msg()
            self.tf.send(self.fixed)
            return
        if self.latest is None or len(self.live) < self.p.min_samples \
                or self.latest.header.stamp == self.published_stamp:  # nothing new: tf2 warns on repeated stamps
            return
        try:
            self.live_result = aggregate(self.live.samples, min_samples=self.p.min_samples)
        except CalibrationError as exc:
            self.get_logger().warning(f'live window not consistent: {exc}', throttle_duration_sec=5.0)
            return
        reason = self._too_spread(self.live_result)
        if reason:
            self.get_logger().warning(f'not publishing the live calibration: {reason}', throttle_duration_sec=5.0)
            return
        msg = self._root_transform(self.latest.header.frame_id, self.live_result.T_base_cam,
                                   self.latest.camera_frame, self.latest.header.stamp)
        if msg is not None:
            self.tf.send(msg)
            self.pub_live.publish(msg)
            self.published_stamp = self.latest.header.stamp

    # -- services ---------------------------------------------------------------------------------------------------
    def _capture(self, request, response):
        if self.latest is None:
            response.success, response.message = False, 'no estimate received yet'
        else:
            self.captured.add(self._sample(self.latest))
            response.success, response.message = True, 'captured the latest estimate'
        response.num_samples = len(self.captured)
        return response

    def _compute(self, request, response):
        source = self.captured if len(self.captured) else self.live
        min_samples = request.min_samples or self.p.min_samples
        response.num_samples = len(source)
        if self.latest is None:
            response.success, response.message = False, 'no estimate received yet'
            return response
        try:
            result = aggregate(source.samples, min_samples=min_samples)
        except CalibrationError as exc:
            response.success, response.message = False, str(exc)
            return response
        response.translation_std_m = float(result.translation_std_m)
        response.rotation_std_deg = float(result.rotation_std_deg)
        response.num_inliers = result.num_inliers
        reason = self._too_spread(result)
        if reason:
            response.success, response.message = False, f'not calibrated: {reason}'
            return response
        msg = self._root_transform(self.latest.header.frame_id, result.T_base_cam, self.latest.camera_frame,
                                   self.get_clock().now().to_msg())
        if msg is None:
            response.success, response.message = False, f'no transform {self.p.root_frame} -> ' \
                                                        f'{self.latest.camera_frame} on /tf_static yet'
            return response
        self.fixed_result = result
        self._set_fixed(msg)
        kind = 'captured' if source is self.captured else 'live-window'
        response.success = True
        response.message = (f'calibrated from {result.num_inliers}/{result.num_samples} {kind} samples: '
                            f'spread {result.translation_std_m * 100:.2f} cm, {result.rotation_std_deg:.2f} deg')
        response.transform = msg
        response.mean_reprojection_error_px = float(result.mean_residual_px)
        self.get_logger().info(response.message)
        return response

    def _set_fixed(self, msg: TransformStamped) -> None:
        self.fixed = msg
        if self.p.mode == 'static':
            self.static_tf.send(msg)
        else:
            self.tf.send(msg)
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
        self._set_fixed(msg)
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
        self.live_result = None
        response.success, response.message = True, 'cleared samples and calibration; publishing the live estimate'
        return response


def main(args=None):
    spin_node(CalibrationManagerNode, args)


if __name__ == '__main__':
    main()
