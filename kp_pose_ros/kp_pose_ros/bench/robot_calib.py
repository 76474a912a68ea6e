"""robot_calib benchmark: RoboKeyGen's cross-camera evaluation (Table II) on synthetic sets the models never saw, with
the paper's ablations as rows (single-frame vs online, diffusion vs regression, NCCS, GT vs predicted 2D, unknown vs
known joints), the error of the aggregated calibration after 30 frames, and the speed of each stage on the ONNX
Runtime provider the models ran on (KP_BENCH_PROVIDERS: auto, tensorrt, cuda or cpu, default cpu; recorded in the
results as `execution_providers`).

Each set: static cameras at one horizontal FOV (the paper's 62.73 / 70.21 / 93.01 deg), the arm moving, distractor
objects, cameras close enough that the arm is sometimes cut by the image border. Seeds start at 100000, far from any
seed the training scripts use."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

FOVS = {'SimXBox360Kinect': 62.73, 'SimRealSense': 70.21, 'SimAzureKinect': 93.01}
SEQUENCES = int(os.environ.get('KP_BENCH_SEQUENCES', '2'))
FRAMES = int(os.environ.get('KP_BENCH_FRAMES', '30'))
SEED_BASE = 100000
# ONNX Runtime provider preference of the benchmark's models (auto, tensorrt, cuda, cpu); the results record the
# provider each model actually ran on.
PROVIDERS = os.environ.get('KP_BENCH_PROVIDERS', 'cpu')
MIN_CONFIDENCE = 0.3
# Depth noise at 1 m (growing with z^2), about a RealSense D435's: the Gaussian depth rows.
DEPTH_NOISE_STD_M = 0.002
# The real depth sensor rows: each set's camera's depth model (sim/depth_sensors.py: scale bias, holes, flying
# pixels, quantisation, misregistration; ToF multipath), one unit drawn per sequence.
REAL_DEPTH_SENSORS = {'SimXBox360Kinect': 'kinect_xbox360', 'SimRealSense': 'realsense_d435',
                      'SimAzureKinect': 'azure_kinect'}
# Joint states out of step with the image by up to this much (uniform), as the target allows.
JOINT_STEP_S = 0.02
# The target rows' depth scale error: +2 % on even sequences, -2 % on odd ones.
TARGET_SCALE_ERROR = 0.02
# RoboKeyGen Table II (Ours, online): AUC@0.1m, median ADD (m), mean ADD (m).
PAPER_TABLE_II = {'SimXBox360Kinect': (77.47, 0.017, 0.025), 'SimRealSense': (76.53, 0.018, 0.026),
                  'SimAzureKinect': (69.01, 0.022, 0.040)}
PAPER_NOTES = ('Paper references (real RealSense-Franka set): Table III regression with predicted 2D 30.84 AUC; '
               'Table IV without NCCS 0.00; Table V single-frame DDIM 67.00, online 72.93; Table VI known joints '
               '74.76 (ours, online), CtRNet 59.51, DREAM-ResNet-H 40.75.')


@dataclass
class Frame:
    rgb: np.ndarray
    camera: object
    keypoints_cam: np.ndarray
    keypoints_px: np.ndarray
    visible: np.ndarray
    joints: np.ndarray
    T_base_cam: np.ndarray
    depth_m: np.ndarray            # Gaussian noise as DEPTH_NOISE_STD_M
    real_depth_m: np.ndarray       # the FOV's depth sensor model (one unit per sequence)
    target_depth_m: np.ndarray     # that model at the target faults: scale +-2 %, no misregistration
    joints_out_of_step: np.ndarray  # the joints JOINT_STEP_S away from the image's instant
    detected: tuple[np.ndarray, np.ndarray] | None = None


def render_sets() -> dict[str, list[list[Frame]]]:
    """Per FOV, SEQUENCES static-camera sequences of FRAMES frames of the arm moving; each frame's ideal depth seen
    through two sensors: Gaussian noise (the paper-style rows) and the FOV's real depth sensor model, one physical
    unit (scale bias, misregistration) drawn per sequence."""
    from kp_pose_ros.sim.camera_presets import camera_from_fov
    from kp_pose_ros.sim.depth_sensors import depth_model_from_name, gaussian
    from kp_pose_ros.sim.scene import SceneConfig, SimScene
    from kp_pose_ros.sim.trajectory import RandomWaypointTrajectory

    sets, units = {}, {}
    for index, (name, fov) in enumerate(FOVS.items()):
        sequences = []
        for s in range(SEQUENCES):
            seed = SEED_BASE + 100 * index + s
            rng = np.random.default_rng(seed)
            sensor = depth_model_from_name(REAL_DEPTH_SENSORS[name], unit_rng=rng)
            target = _target_unit(sensor, TARGET_SCALE_ERROR if s % 2 == 0 else -TARGET_SCALE_ERROR)
            units[f'{name}/{s}'] = {'real': repr(sensor), 'target': repr(target)}
            noisy = gaussian(DEPTH_NOISE_STD_M)
            config = SceneConfig(camera=camera_from_fov(640, 480, fov), num_distractors=3,
                                 distance_range_m=(0.8, 1.8))
            with SimScene(config, seed=seed) as scene:
                scene.randomize_camera()
                traj = RandomWaypointTrajectory(scene.joint_limits, seed=seed, speed=0.4,
                                                accept=lambda q, sc=scene: not sc.in_collision(q))
                frames = []
                for i in range(FRAMES):
                    scene.set_joint_positions(traj.at(i / 10.0))
                    f = scene.render()
                    step = rng.uniform(-JOINT_STEP_S, JOINT_STEP_S)
                    frames.append(Frame(f.rgb, f.camera, f.keypoints_cam, f.keypoints_px, f.visible,
                                        f.joint_positions, f.T_base_cam,
                                        noisy.apply(f.depth_m, f.camera, rng).depth_m,
                                        sensor.apply(f.depth_m, f.camera, rng, rgb=f.rgb).depth_m,
                                        target.apply(f.depth_m, f.camera, rng, rgb=f.rgb).depth_m,
                                        traj.at(max(0.0, i / 10.0 + step))))
            sequences.append(frames)
        sets[name] = sequences
    return sets, units


def _target_unit(sensor, scale_error: float):
    """The unit at the target's conditions: depth scale off by ``scale_error``, no depth offset, depth registered
    to colour exactly (misregistration is not among the target's faults; the real-sensor rows keep it)."""
    from dataclasses import replace

    from kp_pose_ros.sim.depth_sensors import Misregistration

    changes = {'scale_bias': scale_error, 'misregistration': Misregistration()}
    if hasattr(sensor, 'offset_m'):
        changes['offset_m'] = 0.0
    return replace(sensor, **changes)


class Models:
    def __init__(self):
        from kp_pose_ros.paths import model_file
        from kp_pose_ros.robot.calib_eval import robot_estimator
        from kp_pose_ros.robot.estimator import EstimatorConfig
        from kp_pose_ros.robot.keypoints import RobotKeypointDetector
        from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS
        from kp_pose_ros.robot.lifting import DiffusionLifter, JointRegressor, RegressionLifter

        self.detector = RobotKeypointDetector(model_file('robot_keypoints_panda.onnx'), PROVIDERS)
        self.lifter = DiffusionLifter(model_file('robot_lifter_panda.onnx'), PROVIDERS, seed=0)
        self.nonccs = DiffusionLifter(model_file('robot_lifter_nonccs_panda.onnx'), PROVIDERS, seed=0)
        self.regression = RegressionLifter(model_file('robot_lifter_regression_panda.onnx'), PROVIDERS)
        self.joints = JointRegressor(model_file('robot_joints_panda.onnx'), PROVIDERS)
        for wrapper in (self.detector, self.lifter, self.nonccs, self.regression, self.joints):
            wrapper.warmup()  # as the nodes do in on_configure: no first-frame outlier in the timings
        # One robot model (kinematics, surface) shared by every row's estimator, as the node builds it.
        self.robot = robot_estimator(EstimatorConfig(), regressor=self.joints)
        assert tuple(self.detector.keypoint_names) == tuple(self.lifter.keypoint_links) == PANDA_KEYPOINT_LINKS

    def estimator(self, config, lifter_name: str | None):
        from kp_pose_ros.robot.estimator import RobotCalibEstimator

        lifter = {'diffusion': self.lifter, 'nonccs': self.nonccs, 'regression': self.regression}.get(lifter_name)
        return RobotCalibEstimator(self.robot.kinematics, config, self.joints, self.robot.depth_fitter, lifter)

    def providers(self) -> dict:
        """What the benchmark's models ran on: the preference, and per model the provider and why faster ones
        were skipped."""
        wrappers = {'keypoints_2d': self.detector, 'lifter': self.lifter, 'lifter_nonccs': self.nonccs,
                    'lifter_regression': self.regression, 'joints': self.joints}
        return {'preference': PROVIDERS,
                'models': {name: {'model': w.model.path.name, 'provider': w.provider, 'notes': list(w.provider_notes)}
                           for name, w in wrappers.items()}}


@dataclass(frozen=True)
class Row:
    """A benchmark row: what the estimator is fed and how it is configured (EstimatorConfig fields in ``config``).
    ``pixels``: 'predicted' (the keypoint model), 'gt_noise' (ground truth + 2 px noise, 5 % dropped) or 'none'
    (detector off); ``depth``: None, 'gaussian', 'real' (the FOV's sensor model) or 'target' (that model at the
    target's faults); ``joints``: None (unknown),
    'exact' or 'out_of_step' (JOINT_STEP_S off)."""

    name: str
    lifter: str | None = None
    pixels: str = 'predicted'
    depth: str | None = None
    joints: str | None = None
    config: tuple = ()


UNKNOWN = (('joints_mode', 'unknown'), ('depth_alignment', False))
KNOWN = (('joints_mode', 'known'),)
ROWS = (
    Row('diffusion, single-frame', 'diffusion', config=UNKNOWN + (('online_lifting', False), ('refine', False))),
    Row('diffusion, online', 'diffusion', config=UNKNOWN + (('refine', False),)),
    Row('diffusion, online + reprojection refinement', 'diffusion', config=UNKNOWN),
    Row('diffusion, online, GT 2D + noise', 'diffusion', pixels='gt_noise', config=UNKNOWN + (('refine', False),)),
    Row('regression lifter (Table III)', 'regression', config=UNKNOWN + (('online_lifting', False), ('refine', False))),
    Row('diffusion without NCCS (Table IV)', 'nonccs', config=UNKNOWN + (('refine', False),)),
    Row('known joints: PnP + refinement (Table VI)', joints='exact',
        config=KNOWN + (('static_camera_frames', 0), ('depth_alignment', False))),
    Row('known joints: PnP over a 30-frame static-camera window', joints='exact',
        config=KNOWN + (('static_camera_frames', 30), ('depth_alignment', False))),
    Row('known joints: RGB-D, surface aligned with depth, per frame', joints='exact', depth='gaussian',
        config=KNOWN + (('static_camera_frames', 0), ('track_previous_pose', False))),
    Row('known joints: RGB-D, surface aligned with depth, online', joints='exact', depth='gaussian',
        config=KNOWN + (('static_camera_frames', 0),)),
    Row('known joints: RGB-D, target faults (depth scale +-2 %, holes, flying pixels), joints out of step',
        joints='out_of_step', depth='target', config=KNOWN + (('static_camera_frames', 0),)),
    Row('known joints: depth only (keypoint detector off), target faults, joints out of step', pixels='none',
        joints='out_of_step', depth='target', config=KNOWN + (('static_camera_frames', 0),)),
    Row('known joints: RGB-D, full sensor model (+ misregistration, ToF offset), joints out of step',
        joints='out_of_step', depth='real', config=KNOWN + (('static_camera_frames', 0),)),
)


def _observation(frame: Frame, row: Row, rng: np.random.Generator):
    from kp_pose_ros.robot.estimator import Observation

    if row.pixels == 'predicted':
        px, conf = frame.detected
    elif row.pixels == 'gt_noise':
        px = frame.keypoints_px + rng.normal(0, 2.0, frame.keypoints_px.shape)
        conf = np.where(frame.visible & (rng.random(len(px)) > 0.05), 1.0, 0.0)
    else:
        px, conf = np.full_like(frame.keypoints_px, np.nan), np.zeros(len(frame.keypoints_px))
    joints = {'exact': frame.joints, 'out_of_step': frame.joints_out_of_step}.get(row.joints)
    depth = {'gaussian': frame.depth_m, 'real': frame.real_depth_m, 'target': frame.target_depth_m}.get(row.depth)
    return Observation(frame.camera, px, conf, joints=joints, depth_m=depth)


def evaluate(models: Models, sets: dict, row: Row) -> dict:
    from kp_pose_ros.robot.calib_eval import TruthFrame, run_sequence, summarise
    from kp_pose_ros.robot.estimator import EstimatorConfig

    estimator = models.estimator(EstimatorConfig(**dict(row.config)), row.lifter)
    rng = np.random.default_rng(0)
    per_fov = {}
    for fov_name, sequences in sets.items():
        runs = [run_sequence(estimator, [TruthFrame(_observation(f, row, rng), f.T_base_cam, f.keypoints_cam, f.joints)
                                         for f in frames]) for frames in sequences]
        per_fov[fov_name] = summarise(runs)
    stage = {}
    for name in sorted({k for r in per_fov.values() for k in r['stage_ms']}):
        stage[name] = float(np.median([r['stage_ms'][name]['median'] for r in per_fov.values()
                                       if name in r['stage_ms']]))
    return {'row': row.name, 'per_fov': per_fov, 'stage_ms_median': stage}


def run() -> dict:
    models = Models()
    sets, units = render_sets()
    detect_ms = []
    for sequences in sets.values():
        for frames in sequences:
            for frame in frames:
                started = time.perf_counter()
                frame.detected = models.detector.detect(frame.rgb)
                detect_ms.append((time.perf_counter() - started) * 1e3)
    rows = [evaluate(models, sets, row) for row in ROWS]
    main = rows[2]['stage_ms_median']
    detect = float(np.median(detect_ms))
    e2e_ms = detect + main['estimate']
    depth_ms = rows[-1]['stage_ms_median']['estimate']
    rgbd_ms = detect + depth_ms
    return {
        'sets': {name: {'hfov_deg': fov, 'sequences': SEQUENCES, 'frames_per_sequence': FRAMES,
                        'real_depth_sensor': REAL_DEPTH_SENSORS[name],
                        'units': {k: v for k, v in units.items() if k.startswith(name + '/')}}
                 for name, fov in FOVS.items()},
        'joint_states_out_of_step_s': JOINT_STEP_S,
        'rows': rows,
        'speed_ms_median': {'detect_2d': detect, 'lift (K=%d)' % models.lifter.num_candidates: main.get('lift'),
                            'joints + fit + refine': main.get('joints_and_fit'), 'end_to_end': e2e_ms,
                            'end_to_end_fps': 1000.0 / e2e_ms,
                            'known joints RGB-D (real sensor): PnP + depth alignment': depth_ms,
                            'end_to_end_rgbd': rgbd_ms,
                            'end_to_end_rgbd_fps': 1000.0 / rgbd_ms},
        'paper_table_II_online': PAPER_TABLE_II,
        'execution_providers': models.providers(),
    }


def report(results: dict) -> str:
    fovs = list(FOVS)
    head = '| method | ' + ' | '.join(f'{f} AUC / median / mean (cm)' for f in fovs) + ' | joint err (deg) |'
    lines = [head, '|---' * (len(fovs) + 2) + '|']
    for row in results['rows']:
        cells = []
        for f in fovs:
            r = row['per_fov'][f]
            cells.append(f"{r['auc_0.1m']:.1f} / {r['add_median_m'] * 100:.1f} / {r['add_mean_m'] * 100:.1f}")
        joint = [row['per_fov'][f]['joint_error_deg_mean'] for f in fovs]
        joint = f'{np.mean(joint):.1f}' if None not in joint else '– (measured)'
        lines.append(f"| {row['row']} | " + ' | '.join(cells) + f' | {joint} |')
    paper = ' | '.join(f'{a:.1f} / {m * 100:.1f} / {n * 100:.1f}' for a, m, n in
                       (results['paper_table_II_online'][f] for f in fovs))
    lines.append(f'| RoboKeyGen paper, online (Table II) | {paper} | – |')
    lines += ['', PAPER_NOTES, '', '| method | ' + ' | '.join(f'{f} calibration error after {FRAMES} frames '
                                                                   '(cm / deg per sequence)' for f in fovs) + ' |',
              '|---' * (len(fovs) + 1) + '|']
    for row in results['rows']:
        cells = [', '.join('failed' if t is None else f'{t:.2f} / {r:.2f}'
                           for t, r in zip(row['per_fov'][f]['calibration_error_cm'],
                                           row['per_fov'][f]['calibration_error_deg']))
                 for f in fovs]
        lines.append(f"| {row['row']} | " + ' | '.join(cells) + ' |')
    speed = results['speed_ms_median']
    ran_on = sorted({m['provider'].replace('ExecutionProvider', '')
                     for m in results.get('execution_providers', {}).get('models', {}).values()}) or ['CPU']
    lines += ['', f"Speed on this machine, ONNX Runtime on {' + '.join(ran_on)} (median ms per frame): " + ', '.join(
        f'{k} {v:.1f}' for k, v in speed.items() if not k.endswith('_fps') and v is not None)
        + f"; end to end {speed['end_to_end_fps']:.1f} FPS (RGB, unknown joints), "
          f"{speed['end_to_end_rgbd_fps']:.1f} FPS (RGB-D, known joints)"]
    return '\n'.join(lines)
