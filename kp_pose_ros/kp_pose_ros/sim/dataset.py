"""Synthetic keypoint training data, rendered by the same SimScene the sim_camera node publishes from.

Every frame draws a collision-free random arm pose; every `frames_per_camera` frames also draw a new camera pose,
lighting, floor, backdrop and distractor placement. The output is deterministic for (config, seed, frame count).

Layout (LAYOUT_VERSION 1) of DIR:
    meta.yaml           generator, layout_version, seed, num_frames, complete, camera (width, height, K, D,
                        distortion_model), keypoint_links, joint_names, link_names, depth_unit_m, scene settings
                        (renderer, depth sensor model, camera effect ranges, the photographs and their licences)
    annotations.jsonl   one JSON object per frame, in frame order (see below)
    rgb/000000.png      colour image, 8-bit (cv2.imread gives BGR as usual)
    depth/000000.png    uint16 depth along the optical axis in millimetres, 0 = no return
    mask/000000.png     uint8 robot link per pixel: value v > 0 is link meta.link_names[v - 1], 0 = not robot

Annotation fields: index, rgb, depth, mask (paths relative to DIR), camera_index (frames sharing a camera pose),
joint_names, joint_positions (rad), T_base_cam (4x4 row-major, camera optical frame in the robot base frame),
K (3x3), keypoint_names, keypoints_base, keypoints_cam (N x 3, metres), keypoints_px (N x 2, pixel centres at
integers, null behind the camera), in_image, visible (N booleans).

Crash safety: images are written under temporary names and renamed into place, then the frame's annotation line is
appended with one write call; a line only exists once its images do. meta.yaml says complete: true only after the
last frame. load_annotations also drops a trailing line without its newline, should a write ever be cut short.

CLI: python -m kp_pose_ros.sim.dataset --out DIR --frames N --seed S --camera PRESET [--distractors K]
     [--renderer pbr|tiny] [--depth-sensor NAME] [--camera-effects]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from kp_pose_ros.core.atomic_file import append_json_line, atomic_imwrite, atomic_open
from kp_pose_ros.core.image_codec import depth_to_metres, metres_to_depth
from kp_pose_ros.sim.camera_presets import PRESET_NAMES, preset
from kp_pose_ros.sim.photos import licence_records
from kp_pose_ros.sim.scene import RENDERERS, SceneConfig, SimFrame, SimScene
from kp_pose_ros.sim.writer_cli import add_sensor_arguments, progress_printer, sensor_settings

LAYOUT_VERSION = 1
GENERATOR = 'kp_pose_ros.sim.dataset'
META_FILE = 'meta.yaml'
ANNOTATIONS_FILE = 'annotations.jsonl'
_ARRAY_FIELDS = ('joint_positions', 'T_base_cam', 'K', 'keypoints_base', 'keypoints_cam', 'keypoints_px',
                 'in_image', 'visible')


def _listed(array: np.ndarray) -> list:
    """Nested lists for JSON, NaN as null (JSON has no NaN)."""
    array = np.asarray(array)
    if array.dtype.kind == 'f':
        return np.where(np.isfinite(array), array, None).tolist()
    return array.tolist()


def _write_yaml(path: Path, data: dict) -> None:
    with atomic_open(path) as f:
        yaml.safe_dump(data, f, sort_keys=False)


def _meta(config: SceneConfig, scene: SimScene, seed: int, frames_per_camera: int, num_frames: int,
          complete: bool) -> dict:
    cam = config.camera
    return {
        'generator': GENERATOR, 'layout_version': LAYOUT_VERSION, 'seed': int(seed),
        'num_frames': int(num_frames), 'complete': complete,
        'camera': {'width': cam.width, 'height': cam.height, 'K': cam.K.tolist(), 'D': cam.D.tolist(),
                   'distortion_model': cam.distortion_model},
        'keypoint_links': list(scene.keypoint_names), 'joint_names': list(scene.joint_names),
        'link_names': list(scene.link_names), 'depth_unit_m': 0.001,
        'robot_urdf': config.robot_urdf, 'frames_per_camera': int(frames_per_camera),
        'num_distractors': int(config.num_distractors), 'random_background': bool(config.random_background),
        'depth_noise_std_m': float(config.depth_noise_std_m), 'renderer': config.renderer,
        'depth_sensor': type(scene.depth_model).__name__ + ' ' + repr(scene.depth_model),
        'camera_effects': None if config.camera_effects is None else dataclasses.asdict(config.camera_effects),
        'photos': [f"{r['source']}: {r['key']} ({r['licence']})" for r in licence_records()]
        if config.renderer == 'pbr' and config.random_background and config.photo_chance > 0 else [],
    }


def _annotation(index: int, camera_index: int, frame: SimFrame) -> dict:
    name = f'{index:06d}.png'
    return {
        'index': index, 'rgb': f'rgb/{name}', 'depth': f'depth/{name}', 'mask': f'mask/{name}',
        'camera_index': camera_index,
        'joint_names': list(frame.joint_names), 'joint_positions': _listed(frame.joint_positions),
        'T_base_cam': _listed(frame.T_base_cam), 'K': _listed(frame.camera.K),
        'keypoint_names': list(frame.keypoint_names), 'keypoints_base': _listed(frame.keypoints_base),
        'keypoints_cam': _listed(frame.keypoints_cam), 'keypoints_px': _listed(frame.keypoints_px),
        'in_image': _listed(frame.in_image), 'visible': _listed(frame.visible),
    }


def write_dataset(out_dir: str | os.PathLike, num_frames: int, config: SceneConfig | None = None, seed: int = 0,
                  frames_per_camera: int = 1, progress: Callable[[int, int], None] | None = None) -> Path:
    """Render `num_frames` frames into `out_dir` (created; must not already hold a dataset). `progress(done, total)`
    is called after each frame. Returns the output directory."""
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f'num_frames must be a positive integer, got {num_frames}')
    if int(frames_per_camera) != frames_per_camera or frames_per_camera < 1:
        raise ValueError(f'frames_per_camera must be a positive integer, got {frames_per_camera}')
    config = config if config is not None else SceneConfig()
    out = Path(out_dir)
    for existing in (META_FILE, ANNOTATIONS_FILE):
        if (out / existing).exists():
            raise FileExistsError(f'{out / existing} exists: write each dataset into a new directory')
    for sub in ('rgb', 'depth', 'mask'):
        (out / sub).mkdir(parents=True, exist_ok=True)

    with SimScene(config, seed) as scene:
        if len(scene.link_names) > 255:
            raise ValueError(f'the mask stores link index + 1 in uint8; the robot has {len(scene.link_names)} links')
        _write_yaml(out / META_FILE, _meta(config, scene, seed, frames_per_camera, 0, complete=False))
        fd = os.open(out / ANNOTATIONS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for index in range(num_frames):
                if index % frames_per_camera == 0:
                    scene.randomize_camera()
                    scene.randomize_appearance()
                scene.set_joint_positions(scene.sample_joint_positions())
                frame = scene.render()
                name = f'{index:06d}.png'
                atomic_imwrite(out / 'rgb' / name, cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
                atomic_imwrite(out / 'depth' / name, metres_to_depth(frame.depth_m, '16UC1'))
                atomic_imwrite(out / 'mask' / name, (frame.link_seg + 1).astype(np.uint8))
                append_json_line(fd, _annotation(index, index // frames_per_camera, frame), out / ANNOTATIONS_FILE)
                if progress is not None:
                    progress(index + 1, num_frames)
        finally:
            os.close(fd)
        _write_yaml(out / META_FILE, _meta(config, scene, seed, frames_per_camera, num_frames, complete=True))
    return out


def load_meta(out_dir: str | os.PathLike) -> dict:
    """meta.yaml of a dataset, checked for a layout this reader understands."""
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: not a dataset written by {GENERATOR}')
    with open(path, encoding='utf-8') as f:
        meta = yaml.safe_load(f)
    if not isinstance(meta, dict) or meta.get('layout_version') != LAYOUT_VERSION:
        version = meta.get('layout_version') if isinstance(meta, dict) else None
        raise ValueError(f'{path}: layout_version {version!r}, this reader understands {LAYOUT_VERSION}')
    return meta


def load_annotations(out_dir: str | os.PathLike) -> list[dict]:
    """All complete annotation lines, with the array fields as numpy arrays (null -> NaN, flags as bool)."""
    path = Path(out_dir) / ANNOTATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: not a dataset written by {GENERATOR}')
    text = path.read_text(encoding='utf-8')
    lines = text.split('\n')[:-1]  # the last piece is '' after a final newline, or a cut-short line
    annotations = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f'{path}:{number}: not a JSON annotation ({exc})') from None
        for key in _ARRAY_FIELDS:
            record[key] = np.array(record[key], dtype=bool if key in ('in_image', 'visible') else float)
        annotations.append(record)
    return annotations


def load_frame(out_dir: str | os.PathLike, annotation: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3 in RGB order, depth float32 metres with NaN for no return, mask uint8) of one annotation."""
    out = Path(out_dir)
    images = []
    for key, flags in (('rgb', cv2.IMREAD_COLOR), ('depth', cv2.IMREAD_UNCHANGED), ('mask', cv2.IMREAD_UNCHANGED)):
        image = cv2.imread(str(out / annotation[key]), flags)
        if image is None:
            raise FileNotFoundError(f'cannot read {out / annotation[key]}')
        images.append(image)
    rgb, depth_mm, mask = images
    return cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB), depth_to_metres(depth_mm, '16UC1'), mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m kp_pose_ros.sim.dataset', description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='output directory (new, or without a dataset in it)')
    parser.add_argument('--frames', type=int, required=True, help='number of frames to render')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (same seed, same data)')
    parser.add_argument('--camera', default='realsense_d435', choices=PRESET_NAMES, help='intrinsics preset')
    parser.add_argument('--distractors', type=int, default=0, help='distractor objects around the robot')
    parser.add_argument('--frames-per-camera', type=int, default=1,
                        help='frames rendered from each random camera pose and appearance')
    parser.add_argument('--no-random-background', action='store_true',
                        help='plain grey floor and white backdrop instead of random photographs and textures')
    parser.add_argument('--renderer', default='pbr', choices=RENDERERS,
                        help="'pbr' (OpenGL through EGL) or 'tiny' (pybullet's TinyRenderer, the old flat style)")
    add_sensor_arguments(parser, 'realsense_d435 or azure_kinect_nfov')
    args = parser.parse_args(argv)
    if args.frames < 1 or args.distractors < 0 or args.frames_per_camera < 1:
        parser.error('--frames and --frames-per-camera must be >= 1, --distractors >= 0')
    config = SceneConfig(camera=preset(args.camera), num_distractors=args.distractors,
                         random_background=not args.no_random_background, renderer=args.renderer,
                         **sensor_settings(args))
    report = progress_printer(args.frames)
    out = write_dataset(args.out, args.frames, config, args.seed, args.frames_per_camera, report)
    print(f'wrote {args.frames} frames to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
