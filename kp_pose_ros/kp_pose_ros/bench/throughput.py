"""Real throughput of the robot_calib graph: a pre-rendered 30 Hz RealSense-like bag replayed into the graph running
as one process per node (as `ros2 launch robot_calib.launch.py camera:=realsense` starts it), measured from outside
(bench/graph_timing.py: the bag cache, the processes, the timed replay, the CPU accounting).

1. The bag (build/bench/robot_calib_30hz, MCAP) is rendered once by the synthetic scene from seed BAG_SEED (700001,
   held out: no test, training script or other benchmark uses it) and cached; it is re-rendered only when its
   parameters (frames, seed, rate, camera preset, BAG_FORMAT) change. Topics: the RealSense set (colour, aligned
   depth, both camera_info), /joint_states (the robot's, same stamp as the image), latched /robot_description and
   /tf_static camera_link -> camera_color_frame -> camera_color_optical_frame; header stamps exactly 1/30 s apart
   (to the nanosecond) from BASE_STAMP_NS.
2. The graph's configuration for camera:=realsense known_joints:=on (joints from /joint_states, so no lifter;
   depth alignment on) is started with graphs/processes.py and the benchmark waits until every node's lifecycle state is
   active, then plays /robot_description and /tf_static and waits until robot_pose_fitting has built its robot model
   (/diagnostics): start-up is not measured. One change to the defaults: robot_keypoints' max_image_age_s is 0,
   because the bag's stamps are in the past (a live camera stamps now; `ros2 bag play` without --clock has the same
   problem); the check costs nothing otherwise.
3. The timed stream is played once at rate 1.0 from this process, recording the monotonic time each colour image was
   handed to its publisher; /robot_calib/estimate (header.stamp = the image's stamp) is received here, latency =
   receive time - publish time of the image with that stamp. CPU per node process is its utime + stime over the play
   window (/proc) divided by the window's wall time (100 % = one core), next to this process's (the player) and
   everything else on the machine (/proc/stat), so a busy machine shows.

Frames: KP_POSE_THROUGHPUT_FRAMES (default 150, 5 s).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from kp_pose_ros.bench.graph_timing import (
    BASE_STAMP_NS,
    RATE_HZ,
    TF_STATIC,
    add_camera,
    bag_writer,
    bench_dir,
    cached_bag,
    camera_topics,
    frames_from_env,
    graph_bench,
    machine_info,
    percentile,
    process_table,
    read_bag_params,
    rounded,
    stamp_ns,
    summarize,
    write_camera_frame,
    write_driver_tf,
)

BAG_SEED = 700001  # held out: used by nothing else in the project
DEFAULT_FRAMES = 150
CAMERA = 'realsense'           # graph camera preset (topics, frames)
SIM_PRESET = 'realsense_d435'  # intrinsics of the rendered camera
NAMESPACE = 'robot_calib'
# The cell's mode: the arm publishes /joint_states, so the graph runs without the lifter (RGB-D, known joints).
KNOWN_JOINTS = 'on'
# Scene as the robot_calib graph's own sim camera draws it (graphs/robot_calib.py): 2 distractors, random background,
# D435-like depth noise, arm at 0.4 rad/s through random waypoints, one static random camera pose.
NUM_DISTRACTORS = 2
JOINT_SPEED = 0.4
DEPTH_NOISE_STD_M = 0.002
BAG_FORMAT = 2  # bump when what the bag holds changes (2: the true camera pose in the metadata)
TRUTH_DATA_KEY = 'kp_pose_truth'  # T_base_optical of the (static) camera, for the accuracy under load
ROBOT_DESCRIPTION = '/robot_description'
JOINT_STATES = '/joint_states'
ESTIMATE_TOPIC = f'/{NAMESPACE}/estimate'


def default_bag_dir() -> Path:
    return bench_dir() / 'robot_calib_30hz'


# --- the pre-rendered bag ------------------------------------------------------------------------------------------

def bag_params(frames: int, seed: int = BAG_SEED, rate_hz: float = RATE_HZ) -> dict:
    return {'format': BAG_FORMAT, 'frames': int(frames), 'seed': int(seed), 'rate_hz': float(rate_hz),
            'camera': CAMERA, 'sim_preset': SIM_PRESET, 'num_distractors': NUM_DISTRACTORS,
            'joint_speed': JOINT_SPEED, 'depth_noise_std_m': DEPTH_NOISE_STD_M, 'base_stamp_ns': BASE_STAMP_NS}


def write_bag(path: str | Path, frames: int, seed: int = BAG_SEED, rate_hz: float = RATE_HZ) -> dict:
    """Render `frames` frames of the synthetic scene into a new MCAP bag at `path`. Returns the render parameters."""
    from std_msgs.msg import String

    from kp_pose_ros.ros.joint_states import joint_state
    from kp_pose_ros.ros.qos import LATCHED_QOS, qos_profile
    from kp_pose_ros.ros.stamps import ns_to_stamp
    from kp_pose_ros.sim.camera_presets import preset
    from kp_pose_ros.sim.scene import SceneConfig, SimScene
    from kp_pose_ros.sim.trajectory import RandomWaypointTrajectory

    params = bag_params(frames, seed, rate_hz)
    topics = camera_topics(CAMERA)
    with bag_writer(path, params) as bag:
        bag.add(JOINT_STATES, 'sensor_msgs/msg/JointState', qos_profile('reliable', 10))
        add_camera(bag, topics)
        bag.add(ROBOT_DESCRIPTION, 'std_msgs/msg/String', LATCHED_QOS)
        camera = preset(SIM_PRESET)
        scene = SimScene(SceneConfig(camera=camera, num_distractors=NUM_DISTRACTORS, random_background=True,
                                     depth_noise_std_m=DEPTH_NOISE_STD_M), seed=seed)
        try:
            trajectory = RandomWaypointTrajectory(scene.joint_limits, seed=seed, speed=JOINT_SPEED,
                                                  accept=lambda q: not scene.in_collision(q))
            scene.randomize_camera()
            bag.set_data(TRUTH_DATA_KEY, {'T_base_optical': scene.render().T_base_cam.tolist()})
            t0 = stamp_ns(0, rate_hz)
            bag.write(ROBOT_DESCRIPTION, t0, String(data=scene.urdf_text))
            write_driver_tf(bag, topics, t0)
            for i in range(frames):
                t = stamp_ns(i, rate_hz)
                scene.set_joint_positions(trajectory.at(i / rate_hz))
                frame = scene.render()
                # The robot's joint state first, then the camera's messages in the driver's order. Velocities from
                # the trajectory; efforts zero (no dynamics). With both filled, rclpy's CDR has no trailing padding
                # that strict readers (rosbags) refuse, as it has after empty float64 sequences.
                h = 0.5 / rate_hz
                velocity = (trajectory.at(i / rate_hz + h) - trajectory.at(max(0.0, i / rate_hz - h))) / (
                    h + min(h, i / rate_hz))
                bag.write(JOINT_STATES, t, joint_state(
                    frame.joint_names, frame.joint_positions, ns_to_stamp(t), velocities=velocity,
                    efforts=np.zeros(len(frame.joint_names))))
                write_camera_frame(bag, topics, t, frame, camera)
        finally:
            scene.close()
    return params


def ensure_bag(path: str | Path | None = None, frames: int = DEFAULT_FRAMES, seed: int = BAG_SEED,
               rate_hz: float = RATE_HZ) -> tuple[Path, bool]:
    """The cached bag at `path`, rendered first when missing or made with other parameters; (path, rendered now)."""
    return cached_bag(path or default_bag_dir(), bag_params(frames, seed, rate_hz),
                      lambda p: write_bag(p, frames, seed, rate_hz))


# --- the measurement -----------------------------------------------------------------------------------------------

def accuracy(estimates: dict[int, tuple[np.ndarray, bool]], T_base_optical: np.ndarray | None) -> dict:
    """Per-frame camera pose error of the estimates that came through the graph under load ({stamp: (T_base_optical,
    depth_aligned)}) against the rendered truth: what the speed costs, if anything."""
    from kp_pose_ros.core.transforms import rotation_error_deg

    if T_base_optical is None or not estimates:
        return {}
    poses = [T for T, _ in estimates.values()]
    t_cm = np.array([np.linalg.norm(T[:3, 3] - T_base_optical[:3, 3]) * 100 for T in poses])
    r_deg = np.array([rotation_error_deg(T[:3, :3], T_base_optical[:3, :3]) for T in poses])
    return {'translation_cm': {'median': rounded(np.median(t_cm), 2), 'p95': rounded(percentile(t_cm, 95), 2)},
            'rotation_deg': {'median': rounded(np.median(r_deg), 2), 'p95': rounded(percentile(r_deg, 95), 2)},
            'within_1cm_1deg_percent': rounded(100.0 * np.mean((t_cm <= 1.0) & (r_deg <= 1.0)), 1),
            'depth_aligned_percent': rounded(100.0 * np.mean([aligned for _, aligned in estimates.values()]), 1)}


def measure(bag: str | Path, *, log_dir: str | Path | None = None, start_timeout_s: float = 180.0,
            drain_s: float = 3.0) -> dict:
    """Start the graph as separate processes, replay `bag` once into it, measure (see the module docstring)."""
    from kp_pose_msgs.msg import RobotCameraEstimate
    from kp_pose_ros.graphs.processes import full_name
    from kp_pose_ros.graphs.registry import get_graph
    from kp_pose_ros.ros.poses import matrix_from_pose
    from kp_pose_ros.ros.stamps import stamp_to_ns

    topics = camera_topics(CAMERA)
    overrides = {'camera': CAMERA, 'namespace': NAMESPACE, 'known_joints': KNOWN_JOINTS}
    specs = [replace(s, parameters={**s.parameters, 'max_image_age_s': 0.0}) if s.name == 'robot_keypoints' else s
             for s in get_graph('robot_calib').nodes(overrides)]

    received: dict[int, float] = {}
    estimates: dict[int, tuple[np.ndarray, bool]] = {}

    def on_estimate(msg):
        received.setdefault(stamp_to_ns(msg.header.stamp), time.monotonic())
        estimates.setdefault(stamp_to_ns(msg.header.stamp), (matrix_from_pose(msg.pose), msg.depth_aligned))

    started = time.monotonic()
    with graph_bench('throughput_bench', specs, log_dir=log_dir, start_timeout_s=start_timeout_s) as bench:
        bench.node.create_subscription(RobotCameraEstimate, ESTIMATE_TOPIC, on_estimate, 200)
        # Robot model and static TF first (latched, as a robot's bringup publishes them), then wait until the pose
        # fitting node has built its model from it.
        bench.play_latched(bag, [ROBOT_DESCRIPTION, TF_STATIC])
        fitting = full_name(next(s for s in specs if s.name == 'robot_pose_fitting'))
        statuses = bench.statuses
        if not bench.spin_until(lambda: fitting in statuses
                                and 'waiting for the robot model' not in statuses[fitting]['_message'], 60.0):
            raise RuntimeError(f'{fitting} has no robot model 60 s after /robot_description: '
                               f'{statuses.get(fitting, {}).get("_message")}\n'
                               f'{bench.graph.log_tail("robot_pose_fitting")}')
        startup_s = time.monotonic() - started
        play = bench.play_timed(bag, [JOINT_STATES, topics['color'], topics['color_info'], topics['depth'],
                                      topics['depth_info']], topics['color'],
                                [topics['color'], topics['depth'], topics['color_info'], JOINT_STATES],
                                received, drain_s, outputs=[ESTIMATE_TOPIC])

    results = summarize(play.published, received, play.cpu)
    truth = read_bag_params(bag, TRUTH_DATA_KEY)
    results['accuracy'] = accuracy(estimates, np.array(truth['T_base_optical']) if truth else None)
    results.update(bench.results(play, startup_s))
    return results


def run(frames: int | None = None, bag_dir: str | Path | None = None, log_dir: str | Path | None = None,
        seed: int = BAG_SEED) -> dict:
    """The benchmark; ``seed`` other than BAG_SEED only for checking the benchmark itself (tests)."""
    frames = frames_from_env(DEFAULT_FRAMES) if frames is None else int(frames)
    machine = machine_info()
    render_started = time.monotonic()
    bag, rendered = ensure_bag(bag_dir, frames, seed)
    render_s = time.monotonic() - render_started
    results = measure(bag, log_dir=log_dir or Path(bag).parent / 'throughput_logs')
    results['graph'] = {'name': 'robot_calib', 'camera': CAMERA, 'namespace': NAMESPACE,
                        'processes': 'one per node (graphs/processes.py, --autostart)',
                        'changed_defaults': {'robot_keypoints.max_image_age_s': 0.0},
                        'estimate_topic': ESTIMATE_TOPIC}
    results['bag'] = {'path': str(bag), **bag_params(frames, seed), 'rendered_now': rendered,
                      'render_s': rounded(render_s, 1) if rendered else None}
    results['machine'] = machine
    return results


def report(results: dict) -> str:
    lat = results['latency_ms']
    lines = [f"robot_calib, one process per node, {results['bag']['frames']}-frame 30 Hz bag "
             f"(seed {results['bag']['seed']}), {results['machine']['cores_usable']} cores "
             f"({results['machine']['cpu_model']})",
             '| images published | estimates | output rate (Hz) | latency median / p95 / max (ms) | dropped |',
             '|---|---|---|---|---|',
             f"| {results['images_published']} | {results['estimates_received']} | "
             f"{results.get('output_rate_hz')} (input {results.get('input_rate_hz')}) | "
             f"{lat['median']} / {lat['p95']} / {lat['max']} | {results['dropped_frames']} "
             f"({results['dropped_percent']} %) |",
             '', *process_table(results)]
    acc = results.get('accuracy')
    if acc:
        lines += ['', f"per-frame camera error of the estimates that came through: median "
                      f"{acc['translation_cm']['median']} cm / {acc['rotation_deg']['median']} deg, p95 "
                      f"{acc['translation_cm']['p95']} cm / {acc['rotation_deg']['p95']} deg; within 1 cm and 1 deg "
                      f"{acc['within_1cm_1deg_percent']} %; depth-aligned "
                      f"{acc['depth_aligned_percent']} %; calibration_manager: "
                      f"{results['nodes'].get('calibration_manager', {}).get('message')}"]
    return '\n'.join(lines)


if __name__ == '__main__':
    print(json.dumps(run(), indent=2))
