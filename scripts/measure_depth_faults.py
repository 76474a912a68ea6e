"""RGB-D robot calibration on simulated real sensors: per-frame and 30-frame calibration errors, estimated depth scale.

Per sensor and scene seed: one physical unit and one fixed camera, random collision-free arm poses, known joints,
keypoints = ground truth + 2 px noise (NaN where hidden); RobotDepthFitter.fit per frame (PnP as its candidate, as in
bench/robot_calib.py), then calibration.aggregate over the frames. Renders are cached (``--cache``), so code versions
are compared on identical frames. Development seeds only (never >= 100000, the benchmark's).

    scripts/run.sh python scripts/measure_depth_faults.py --seeds 5000 5001 5002 --frames 30
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from kp_pose_ros.core.transforms import invert_transform, rotation_error_deg
from kp_pose_ros.robot.calibration import CalibrationSample, aggregate
from kp_pose_ros.robot.depth_fit import RobotDepthFitter
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS, RobotKinematics
from kp_pose_ros.robot.pose import fit_known_joints
from kp_pose_ros.robot.surface import sample_robot_surface
from kp_pose_ros.robot.urdf import parse_urdf
from kp_pose_ros.sim.scene import SceneConfig, SimScene


def render_scene(sensor: str, seed: int, frames: int, cache: str) -> dict:
    """Frames of one scene (depth, joints, noisy keypoints, true pose) and its unit's depth errors, cached."""
    path = os.path.join(cache, f'{sensor}_{seed}_{frames}.npz')
    if os.path.exists(path):
        return dict(np.load(path))
    rng = np.random.default_rng(seed)
    with SimScene(SceneConfig(depth_sensor=sensor), seed=seed) as scene:
        depth, joints, pixels = [], [], []
        for _ in range(frames):
            scene.set_joint_positions(scene.sample_joint_positions())
            frame = scene.render()
            px = frame.keypoints_px + rng.normal(0.0, 2.0, frame.keypoints_px.shape)
            depth.append(frame.depth_m)
            joints.append(frame.joint_positions)
            pixels.append(np.where(frame.visible[:, None], px, np.nan))
        unit = scene.depth_model
        mis = getattr(unit, 'misregistration', None)
        data = dict(depth=np.array(depth), joints=np.array(joints), pixels=np.array(pixels),
                    T_base_cam=frame.T_base_cam, K=frame.camera.K, size=(frame.camera.width, frame.camera.height),
                    scale=1.0 + getattr(unit, 'scale_bias', 0.0), offset=getattr(unit, 'offset_m', 0.0),
                    misregistration_deg=0.0 if mis is None else np.linalg.norm(mis.rotation_deg),
                    urdf=scene.urdf_text)
    os.makedirs(cache, exist_ok=True)
    np.savez_compressed(path, **data)
    return data


def evaluate(data: dict, fitter: RobotDepthFitter, camera, depth_scale: float | None = None,
             holes: float = 0.0) -> dict:
    """Per-frame errors and scales, fit times and the aggregate's error against the true camera pose; ``holes``:
    that fraction of the pixels is dropped at random on top of the sensor's own holes."""
    T_true = data['T_base_cam']
    rng = np.random.default_rng(0)
    t_err, r_err, scales, times, samples = [], [], [], [], []
    for i, (depth, q, px) in enumerate(zip(data['depth'], data['joints'], data['pixels'])):
        depth = np.where(rng.random(depth.shape) < holes, np.nan, depth)
        started = time.perf_counter()
        pnp = fit_known_joints(q, px, camera, fitter.kinematics)
        aligned = fitter.fit(depth, camera, q, px, candidates=(pnp.T_cam_base if pnp.success else None,),
                             depth_scale=depth_scale)
        times.append(time.perf_counter() - started)
        if not aligned.success:
            continue
        T = invert_transform(aligned.T_cam_base)
        t_err.append(np.linalg.norm(T[:3, 3] - T_true[:3, 3]))
        r_err.append(rotation_error_deg(T, T_true))
        scales.append(aligned.depth_scale)
        samples.append(CalibrationSample(i, T))
    try:
        calib = aggregate(samples).T_base_cam
        calib_err = (np.linalg.norm(calib[:3, 3] - T_true[:3, 3]), rotation_error_deg(calib, T_true))
    except ValueError:
        calib_err = (float('nan'), float('nan'))
    return dict(t=np.array(t_err), r=np.array(r_err), scale=np.array(scales), times=np.array(times),
                calib=calib_err, failed=len(data['depth']) - len(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sensors', nargs='+', default=['realsense_d435', 'azure_kinect'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[5000, 5001, 5002])
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--cache', default='/tmp/measure_depth_faults')
    parser.add_argument('--holes', type=float, default=0.0, help='extra random holes, fraction of the pixels')
    args = parser.parse_args()
    if any(seed >= 100000 for seed in args.seeds):
        parser.error('seeds >= 100000 are benchmark seeds')
    from kp_pose_ros.core.camera import CameraModel
    fitter = None
    for sensor in args.sensors:
        for seed in args.seeds:
            data = render_scene(sensor, seed, args.frames, args.cache)
            width, height = (int(v) for v in data['size'])
            K = data['K']
            camera = CameraModel.pinhole(width, height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
            if fitter is None:
                urdf = str(data['urdf'])
                kin = RobotKinematics(parse_urdf(urdf), 'panda_link0', PANDA_KEYPOINT_LINKS)
                surface = sample_robot_surface(urdf, kin.link_names, None, num_points=3000)
                fitter = RobotDepthFitter(surface, kin)
            r = evaluate(data, fitter, camera, holes=args.holes)
            # A static camera's caller passes the consensus of the earlier frames' scales as known.
            known = evaluate(data, fitter, camera, float(np.median(r['scale'])), args.holes)
            print(f'{sensor} seed {seed}: true scale {float(data["scale"]):.4f}, offset '
                  f'{float(data["offset"]) * 1e3:+.1f} mm, misregistration {float(data["misregistration_deg"]):.2f} deg'
                  f'\n  frames: t median {np.median(r["t"]) * 1e3:.1f} p90 {np.percentile(r["t"], 90) * 1e3:.1f} mm, '
                  f'r median {np.median(r["r"]):.2f} deg, failed {r["failed"]}, fit median '
                  f'{np.median(r["times"]) * 1e3:.0f} ms; scale median {np.median(r["scale"]):.4f} std '
                  f'{np.std(r["scale"]):.4f}\n  calibration: {r["calib"][0] * 1e3:.1f} mm {r["calib"][1]:.2f} deg; '
                  f'with that median scale known: {known["calib"][0] * 1e3:.1f} mm {known["calib"][1]:.2f} deg',
                  flush=True)

if __name__ == '__main__':
    main()
