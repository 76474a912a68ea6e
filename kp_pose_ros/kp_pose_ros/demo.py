"""`make demo`: runs a pipeline graph on the synthetic camera in one process, prints what arrives live, and writes
an annotated PNG (colour with the ground-truth skeleton beside the depth map) to demo_output/."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node

from kp_pose_ros.core.draw import chain_edges, colorize_depth, draw_skeleton, write_png
from kp_pose_ros.graphs.runner import run_graph
from kp_pose_ros.ros.images import depth_m_from_msg, rgb8_from_msg
from kp_pose_ros.ros.stamps import stamp_to_ns
from kp_pose_ros.ros.sync import SyncedSubscriber


class SimViewer(Node):
    """Keeps the latest synchronised colour/depth/camera_info set and the matching ground-truth keypoints."""

    def __init__(self, **kwargs):
        super().__init__('demo_viewer', **kwargs)
        from kp_pose_msgs.msg import KeypointArray
        from sensor_msgs.msg import CameraInfo, Image

        self.frames = 0
        self.latest = None
        self.keypoints = {}
        self.sync = SyncedSubscriber(self, [(Image, '/camera/camera/color/image_raw'),
                                            (Image, '/camera/camera/aligned_depth_to_color/image_raw'),
                                            (CameraInfo, '/camera/camera/color/camera_info')],
                                     self._on_frame, slop_s=0.01, queue_size=5)
        self.create_subscription(KeypointArray, '/sim/keypoints', self._on_keypoints, 10)

    def _on_frame(self, color, depth, info):
        self.frames += 1
        self.latest = (color, depth, info)

    def _on_keypoints(self, msg):
        self.keypoints[stamp_to_ns(msg.header.stamp)] = msg
        while len(self.keypoints) > 20:
            self.keypoints.pop(min(self.keypoints))


def render_overlay(color, depth, keypoints) -> np.ndarray:
    rgb = rgb8_from_msg(color)
    inst = keypoints.instances[0]
    px = np.array([[k.x, k.y] for k in inst.keypoints_2d])
    visible = np.array([k.score >= 1.0 for k in inst.keypoints_2d])
    left = draw_skeleton(rgb, px, chain_edges(len(px)), (0, 255, 0), valid=visible)
    right = colorize_depth(depth_m_from_msg(depth))
    return np.concatenate([left, right], axis=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='kp-pose demo', description=__doc__)
    parser.add_argument('--duration', type=float, default=8.0, help='seconds to run')
    parser.add_argument('--out', default='demo_output', help='directory for the PNG')
    parser.add_argument('--seed', default='0')
    args = parser.parse_args(argv)

    with run_graph('sim_camera', {'seed': args.seed}) as run:
        viewer = SimViewer(context=run.context)
        run.executor.add_node(viewer)
        try:
            start = time.monotonic()
            next_report = start + 1.0
            while time.monotonic() - start < args.duration:
                run.executor.spin_once(timeout_sec=0.05)
                if time.monotonic() >= next_report:
                    next_report += 1.0
                    rate = viewer.frames / (time.monotonic() - start)
                    print(f'[{time.monotonic() - start:4.1f} s] {viewer.frames} synchronised RGB-D frames '
                          f'({rate:.1f} Hz), dropped by sync: {viewer.sync.dropped}', flush=True)
            if viewer.latest is None:
                print('demo: no frames arrived')
                return 1
            color, depth, _info = viewer.latest
            gt = viewer.keypoints.get(stamp_to_ns(color.header.stamp))
            if gt is None:
                print('demo: no ground truth matched the last frame')
                return 1
            path = Path(args.out) / 'sim_frame.png'
            write_png(path, render_overlay(color, depth, gt))
            kp = gt.instances[0]
            print(f'demo: {sum(k.score >= 1.0 for k in kp.keypoints_2d)}/{len(kp.keypoints_2d)} robot keypoints '
                  f'visible in the last frame; overlay written to {path}')
        finally:
            run.executor.remove_node(viewer)
            viewer.destroy_node()
    return 0
