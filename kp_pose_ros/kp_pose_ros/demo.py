"""`make demo`: markerless camera-to-robot calibration on the synthetic camera.

Runs the robot_calib graph with camera:=sim, one process per node as `ros2 launch` starts it (or composed into this
process with --in-process) (the sim camera, 2D keypoints, diffusion lifting, pose fitting,
calibration manager), prints the per-frame and live aggregated estimates against the true camera pose and the
pipeline's frame rate, captures a sample every --capture-every seconds (distinct arm poses), then computes and saves
the calibration (YAML) with its uncertainty, says whether that covers the true error, and writes the last debug image
(PNG)."""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rclpy.node import Node

from kp_pose_ros.core.draw import write_png
from kp_pose_ros.core.transform_tree import TransformTree
from kp_pose_ros.core.transforms import rotation_error_deg
from kp_pose_ros.graphs.processes import running_graph
from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.runner import run_graph
from kp_pose_ros.ros.images import rgb8_from_msg
from kp_pose_ros.ros.poses import matrix_from_pose
from kp_pose_ros.ros.stamps import stamp_to_ns
from kp_pose_ros.ros.tf import TfListener, transform_from_msg

NS = '/robot_calib'


class DemoObserver(Node):
    """Collects the pipeline's outputs and the simulator's ground truth, matched by stamp."""

    def __init__(self, **kwargs):
        super().__init__('demo_observer', **kwargs)
        from geometry_msgs.msg import PoseStamped, TransformStamped
        from sensor_msgs.msg import Image

        from kp_pose_msgs.msg import RobotCameraEstimate

        self.truth: dict[int, np.ndarray] = {}
        self.estimates: list[tuple[int, np.ndarray, bool]] = []
        self.live: TransformStamped | None = None
        self.debug_image = None
        self.tree = TransformTree()
        self.tf = TfListener(self, self.tree)
        self.create_subscription(PoseStamped, '/sim/camera_pose', self._on_truth, 50)
        self.create_subscription(RobotCameraEstimate, f'{NS}/estimate', self._on_estimate, 50)
        self.create_subscription(TransformStamped, f'{NS}/calibration_manager/live_calibration', self._on_live, 10)
        self.create_subscription(Image, f'{NS}/debug_image', self._on_debug, 2)

    def _on_truth(self, msg):
        self.truth[stamp_to_ns(msg.header.stamp)] = matrix_from_pose(msg.pose)

    def _on_estimate(self, msg):
        self.estimates.append((stamp_to_ns(msg.header.stamp), matrix_from_pose(msg.pose), msg.known_joints))

    def _on_live(self, msg):
        self.live = msg

    def _on_debug(self, msg):
        self.debug_image = msg

    def frame_errors(self) -> list[tuple[float, float]]:
        out = []
        for stamp, T, _ in self.estimates:
            if stamp in self.truth:
                T_true = self.truth[stamp]
                out.append((float(np.linalg.norm(T[:3, 3] - T_true[:3, 3])),
                            rotation_error_deg(T[:3, :3], T_true[:3, :3])))
        return out

    def live_error(self) -> tuple[float, float] | None:
        """Error of the published base -> camera_link against the truth, through the driver's static transform."""
        if self.live is None or not self.truth:
            return None
        try:
            T_link_optical = self.tree.lookup(self.live.child_frame_id, 'camera_color_optical_frame')
        except LookupError:
            return None
        T = transform_from_msg(self.live) @ T_link_optical
        T_true = self.truth[max(self.truth)]
        return float(np.linalg.norm(T[:3, 3] - T_true[:3, 3])), rotation_error_deg(T[:3, :3], T_true[:3, :3])


def _call(node, executor, srv_type, service, timeout_s=10.0, **fields):
    client = node.create_client(srv_type, service)
    deadline = time.monotonic() + timeout_s
    while not client.service_is_ready() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    future = client.call_async(srv_type.Request(**fields))
    while not future.done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return future.result()


@contextmanager
def _running_graph(overrides, in_process: bool, log_dir: Path):
    """(context, executor) beside the running robot_calib graph: composed in this process, or one process per node
    (brought to active before this yields, so start-up is not in the demo's rate)."""
    if in_process:
        with run_graph('robot_calib', overrides) as run:
            yield run.context, run.executor
        return
    with running_graph(get_graph('robot_calib').nodes(overrides), log_dir=log_dir) as (context, executor, _, _):
        yield context, executor


def main(argv=None) -> int:
    from kp_pose_msgs.srv import CaptureSample, ComputeCalibration, SaveCalibration

    parser = argparse.ArgumentParser(prog='kp-pose demo', description=__doc__)
    parser.add_argument('--duration', type=float, default=20.0, help='seconds to run')
    parser.add_argument('--out', default='demo_output', help='directory for the calibration YAML and the PNG')
    parser.add_argument('--seed', default='0')
    parser.add_argument('--known-joints', default='auto', choices=('auto', 'on', 'off'))
    parser.add_argument('--capture-every', type=float, default=1.0,
                        help='seconds between captures (the arm has moved on to a distinct pose by then)')
    parser.add_argument('--in-process', action='store_true',
                        help='compose every node into this process (kp-pose run) instead of one process per node')
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()

    overrides = {'camera': 'sim', 'seed': args.seed, 'debug_image': 'true', 'known_joints': args.known_joints,
                 'calibration_dir': str(out), 'calibration_name': 'demo'}
    with _running_graph(overrides, args.in_process, out / 'logs') as (context, executor):
        observer = DemoObserver(context=context)
        executor.add_node(observer)
        try:
            start = time.monotonic()
            next_report, next_capture, captured = start + 2.0, start + args.capture_every, 0
            while time.monotonic() - start < args.duration:
                executor.spin_once(timeout_sec=0.05)
                if observer.estimates and time.monotonic() >= next_capture:
                    # As a user calibrates: a sample at each distinct arm pose, not thirty frames of one view.
                    next_capture += args.capture_every
                    reply = _call(observer, executor, CaptureSample, f'{NS}/calibration_manager/capture')
                    captured = reply.num_samples if reply is not None and reply.success else captured
                if time.monotonic() >= next_report:
                    next_report += 2.0
                    errors = observer.frame_errors()
                    elapsed = time.monotonic() - start
                    count = len(observer.estimates)
                    line = f'[{elapsed:5.1f} s] {count} estimates ({count / elapsed:.1f} FPS)'
                    if errors:
                        t, r = errors[-1]
                        line += f'; last frame error {t * 100:.2f} cm {r:.2f} deg'
                    live = observer.live_error()
                    if live:
                        line += f'; live aggregate error {live[0] * 100:.2f} cm {live[1]:.2f} deg'
                    print(line, flush=True)
            if not observer.estimates:
                print('demo: the pipeline produced no estimate (see the log above)')
                return 1
            errors = np.array(observer.frame_errors())
            if errors.size:
                print(f'demo: per-frame error median {np.median(errors[:, 0]) * 100:.2f} cm, '
                      f'{np.median(errors[:, 1]):.2f} deg over {len(errors)} frames '
                      f'({"known" if observer.estimates[-1][2] else "estimated"} joints)')
            print(f'demo: captured {captured} samples, one every {args.capture_every:g} s while the arm moved')
            computed = _call(observer, executor, ComputeCalibration, f'{NS}/calibration_manager/compute')
            print(f'demo: compute: {computed.message}')
            live = observer.live_error()
            if computed.success:
                saved = _call(observer, executor, SaveCalibration, f'{NS}/calibration_manager/save', name='demo')
                print(f'demo: save: {saved.message}')
                T = transform_from_msg(computed.transform)
                T_link_optical = observer.tree.lookup(computed.transform.child_frame_id, 'camera_color_optical_frame')
                T_opt, T_true = T @ T_link_optical, observer.truth[max(observer.truth)]
                error_t = float(np.linalg.norm(T_opt[:3, 3] - T_true[:3, 3]))
                error_r = rotation_error_deg(T_opt[:3, :3], T_true[:3, :3])
                bound_t, bound_r = computed.translation_uncertainty_m, computed.rotation_uncertainty_deg
                covers = 'covers' if error_t <= bound_t and error_r <= bound_r else 'does NOT cover'
                print(f'demo: calibration error {error_t * 100:.2f} cm, {error_r:.2f} deg; reported uncertainty '
                      f'(95 %, {computed.num_configurations} arm configurations) {bound_t * 100:.2f} cm, '
                      f'{bound_r:.2f} deg: it {covers} the error')
            elif live:
                print(f'demo: live aggregate error {live[0] * 100:.2f} cm, {live[1]:.2f} deg')
            if observer.debug_image is not None:
                path = out / 'robot_calib_debug.png'
                write_png(path, rgb8_from_msg(observer.debug_image))
                print(f'demo: estimated skeleton (green) over detected keypoints (red) written to {path}')
        finally:
            executor.remove_node(observer)
            observer.destroy_node()
    return 0
