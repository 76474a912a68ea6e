"""Synthetic camera speed: render time per preset in process, and the frame rate and image latency another process
sees over DDS (shared-memory transport) while the sim_camera graph runs in its own process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

RENDER_PRESETS = ('realsense_d435', 'azure_kinect')
# Render settings timed per preset: sim_camera's default (PBR without shadows, Gaussian depth noise), PBR with shadows
# as training renders it, the old flat renderer, and a real camera (PBR with the preset's depth sensor model, colour
# camera effects and three distractors).
RENDER_SETTINGS = {
    'pbr, no shadows (sim_camera default)': {'shadows': False},
    'pbr with shadows (training data)': {},
    'tiny': {'renderer': 'tiny'},
    'pbr + depth sensor + camera effects': {'depth_sensor': 'preset', 'camera_effects': True, 'num_distractors': 3},
}
STREAM_RATES_HZ = (10.0, 30.0)  # the default rate, and more than rendering allows (throughput)
STREAM_SECONDS = 8.0
TOPICS = ('/camera/camera/color/image_raw', '/camera/camera/aligned_depth_to_color/image_raw')


def render_times(preset_name: str, settings: dict, frames: int = 15) -> dict:
    from kp_pose_ros.sim.camera_effects import EffectRanges
    from kp_pose_ros.sim.camera_presets import preset
    from kp_pose_ros.sim.scene import SceneConfig, SimScene
    from kp_pose_ros.sim.trajectory import RandomWaypointTrajectory

    settings = dict(settings)
    if settings.get('depth_sensor') == 'preset':
        settings['depth_sensor'] = preset_name
    if settings.pop('camera_effects', False):
        settings['camera_effects'] = EffectRanges()
    scene = SimScene(SceneConfig(camera=preset(preset_name), **settings), seed=0)
    try:
        traj = RandomWaypointTrajectory(scene.joint_limits, seed=0, speed=0.4)
        times = []
        for i in range(frames):
            scene.set_joint_positions(traj.at(i / 10.0))
            t0 = time.perf_counter()
            scene.render()
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        scene.close()
    times = np.asarray(times[2:])  # the first renders load meshes and textures
    return {'render_ms_median': float(np.median(times)), 'render_ms_p95': float(np.percentile(times, 95))}


def stream_stats(rate_hz: float, seconds: float = STREAM_SECONDS) -> dict:
    """Start `kp-pose run sim_camera` in a second process and measure what arrives here."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from kp_pose_ros.ros.qos import qos_from_name
    from kp_pose_ros.ros.topic_stats import TopicStats, topic_type

    proc = subprocess.Popen([sys.executable, '-m', 'kp_pose_ros.cli', 'run', 'sim_camera', f'rate_hz:={rate_hz}'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=os.environ)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('bench_sim_camera', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        stats = {t: TopicStats(node, t, topic_type(node, t, executor, 30.0), qos_from_name('reliable', 10))
                 for t in TOPICS}
        warmup = time.monotonic() + 2.0
        while time.monotonic() < warmup:
            executor.spin_once(timeout_sec=0.05)
        for s in stats.values():
            s.arrivals_ns.clear(), s.latencies_ms.clear(), s.sizes.clear()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return {'requested_rate_hz': rate_hz, **{t: s.summary() for t, s in stats.items()}}
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run() -> dict:
    return {'render': {p: {name: render_times(p, settings) for name, settings in RENDER_SETTINGS.items()}
                       for p in RENDER_PRESETS},
            'stream': [stream_stats(rate) for rate in STREAM_RATES_HZ]}


def report(results: dict) -> str:
    lines = ['| preset | settings | render median (ms) | render p95 (ms) |', '|---|---|---|---|']
    for name, per_setting in results['render'].items():
        for setting, r in per_setting.items():
            lines.append(f"| {name} | {setting} | {r['render_ms_median']:.1f} | {r['render_ms_p95']:.1f} |")
    lines += ['', 'Two processes over DDS (shared memory):',
              '| asked (Hz) | topic | rate (Hz) | latency median (ms) | latency p95 (ms) | size (KiB) |',
              '|---|---|---|---|---|---|']
    for s in results['stream']:
        for t in TOPICS:
            r = s[t]
            lines.append(f"| {s['requested_rate_hz']:g} | {t} | {r.get('rate_hz', 0):.1f} | "
                         f"{r.get('latency_ms_median', float('nan')):.1f} | "
                         f"{r.get('latency_ms_p95', float('nan')):.1f} | {r.get('bytes_mean', 0) / 1024:.0f} |")
    return '\n'.join(lines)
