"""Synthetic training data for the rigid-object pipeline in BOP format (and YOLO detection labels of the same frames),
rendered from sim.objects table-top scenes.

Layout of DIR (BOP's, as its "train_pbr" splits; poses in mm, depth as uint16 mm, depth_scale 1.0):
    camera.json                       cx, cy, fx, fy, width, height, depth_scale
    models/                           the model files the frames show (hard links, copies where links fail), so the
                                      folder is a complete BOP dataset (objects.bop reads it, evaluation scores it)
    meta.yaml                         generator, seed, num_frames, complete, models folder, object ids, settings
    train_pbr/000000/                 a scene folder per FRAMES_PER_SCENE frames
        scene_camera.json             {im_id: cam_K (row-major 3x3), depth_scale, cam_R_w2c, cam_t_w2c (mm)}
        scene_gt.json                 {im_id: [{obj_id, cam_R_m2c (row-major), cam_t_m2c (mm)}, ...]}
        scene_gt_info.json            {im_id: [{bbox_obj, bbox_visib, px_count_all, px_count_valid, px_count_visib,
                                                visib_fract}, ...]}, in scene_gt's order
        rgb/000000.png  depth/000000.png
        mask/000000_000000.png        im_id_gtindex: the instance's full silhouette (rendered alone), 0/255
        mask_visib/000000_000000.png  its visible part
    yolo/                             with --yolo
        data.yaml                     train/val: images, names: {class: obj_XXXXXX} (classes = sorted obj_ids)
        images/000000_000000.png      scene_im: a hard link to the BOP rgb image (a copy where links fail)
        labels/000000_000000.txt      "class cx cy w h" normalised, boxes of the visible masks; instances below
                                      min_visib_fract left out

Boxes are [x, y, w, h] as the BOP toolkit computes them (w = x_max - x_min). bbox_obj bounds the projected model
vertices (it may reach outside the image), the other fields count pixels inside the image. A new layout (table,
objects dropped and settled) every `views_per_layout` frames, a new camera pose and looks every frame.

Crash safety: images are written under temporary names and renamed into place; the scene JSON files are rewritten
(atomically) after every frame, so they only list frames whose images exist. meta.yaml says complete: true only
after the last frame. Deterministic for (models, config, seed, frame count).

CLI: python -m kp_pose_ros.sim.bop_writer --models DIR --out DIR --frames N --seed S [--objects K] [--yolo]
     [--camera PRESET] [--depth-sensor NAME] [--camera-effects] [--views-per-layout V]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from kp_pose_ros.core.atomic_file import atomic_imwrite, atomic_open
from kp_pose_ros.core.image_codec import metres_to_depth
from kp_pose_ros.objects.models import ObjectModel, load_bop_models
from kp_pose_ros.sim.camera_presets import PRESET_NAMES, preset
from kp_pose_ros.sim.objects import ObjectFrame, ObjectScene, ObjectSceneConfig, bop_pose, model_points_px
from kp_pose_ros.sim.writer_cli import add_sensor_arguments, progress_printer, sensor_settings

GENERATOR = 'kp_pose_ros.sim.bop_writer'
META_FILE = 'meta.yaml'
SPLIT = 'train_pbr'
FRAMES_PER_SCENE = 1000
DEPTH_SCALE = 1.0  # depth PNG value * depth_scale = mm


def _write_json(path: Path, data) -> None:
    with atomic_open(path) as f:
        json.dump(data, f)


def bop_bbox(mask: np.ndarray) -> list[int]:
    """[x, y, w, h] of a mask's pixels as the BOP toolkit's calc_2d_bbox gives it; [-1, -1, -1, -1] if empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]


def gt_info(frame: ObjectFrame, k: int, model: ObjectModel, depth_png: np.ndarray) -> dict:
    """scene_gt_info.json entry of instance k."""
    full, visible = frame.full_masks[k], frame.visible_mask(k)
    px = model_points_px(model, frame.instances[k].T_cam_obj, frame.frame.camera)
    px = px[np.isfinite(px).all(axis=1)]
    if len(px):
        lo, hi = np.floor(px.min(axis=0) + 0.5).astype(int), np.floor(px.max(axis=0) + 0.5).astype(int)
        bbox_obj = [int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])]
    else:
        bbox_obj = [-1, -1, -1, -1]
    count_all, count_visib = int(full.sum()), int(visible.sum())
    return {'bbox_obj': bbox_obj, 'bbox_visib': bop_bbox(visible), 'px_count_all': count_all,
            'px_count_valid': int((full & (depth_png > 0)).sum()), 'px_count_visib': count_visib,
            'visib_fract': count_visib / count_all if count_all > 0 else 0.0}


def yolo_line(cls: int, mask: np.ndarray) -> str:
    """`class cx cy w h` of a mask's pixel extent (pixel i covers [i, i + 1)), normalised to the image size."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return (f'{cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} '
            f'{(y1 - y0) / height:.6f}')


def _meta(models_dir, models, config: ObjectSceneConfig, seed: int, num_frames: int, views_per_layout: int,
          min_visib_fract: float, yolo: bool, complete: bool) -> dict:
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != 'camera'}
    return {'generator': GENERATOR, 'seed': int(seed), 'num_frames': int(num_frames), 'complete': complete,
            'models': str(models_dir), 'obj_ids': [int(k) for k in models], 'split': SPLIT,
            'frames_per_scene': FRAMES_PER_SCENE, 'views_per_layout': int(views_per_layout), 'yolo': bool(yolo),
            'min_visib_fract': float(min_visib_fract), 'depth_scale': DEPTH_SCALE,
            'config': json.loads(json.dumps(settings))}


def _link_or_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f'.{target.name}.{os.getpid()}.tmp')
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def write_bop(out_dir: str | os.PathLike, models_dir: str | os.PathLike, num_frames: int,
              config: ObjectSceneConfig | None = None, seed: int = 0, views_per_layout: int = 5, yolo: bool = False,
              min_visib_fract: float = 0.1, obj_ids=None,
              progress: Callable[[int, int], None] | None = None) -> Path:
    """Render `num_frames` frames of objects from the BOP model folder `models_dir` into `out_dir` (created; must not
    already hold a dataset). YOLO labels too with `yolo`. Returns the output directory."""
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f'num_frames must be a positive integer, got {num_frames}')
    if int(views_per_layout) != views_per_layout or views_per_layout < 1:
        raise ValueError(f'views_per_layout must be a positive integer, got {views_per_layout}')
    config = config if config is not None else ObjectSceneConfig()
    out = Path(out_dir)
    if (out / META_FILE).exists():
        raise FileExistsError(f'{out / META_FILE} exists: write each dataset into a new directory')
    models = load_bop_models(models_dir, obj_ids)
    classes = {obj_id: k for k, obj_id in enumerate(models)}
    cam = config.camera
    out.mkdir(parents=True, exist_ok=True)
    (out / 'models').mkdir(exist_ok=True)
    for path in sorted(Path(models_dir).iterdir()):
        if path.name == 'models_info.json' or path.name in {f'{m.name}.ply' for m in models.values()} \
                or path.suffix.lower() in ('.png', '.jpg'):  # textures the PLY files name
            _link_or_copy(path, out / 'models' / path.name)
    meta = dict(models_dir=models_dir, models=models, config=config, seed=seed, views_per_layout=views_per_layout,
                min_visib_fract=min_visib_fract, yolo=yolo)
    with atomic_open(out / META_FILE) as f:
        yaml.safe_dump(_meta(num_frames=0, complete=False, **meta), f, sort_keys=False)
    _write_json(out / 'camera.json', {'cx': cam.cx, 'cy': cam.cy, 'depth_scale': DEPTH_SCALE, 'fx': cam.fx,
                                      'fy': cam.fy, 'height': cam.height, 'width': cam.width})
    if yolo:
        for sub in ('images', 'labels'):
            (out / 'yolo' / sub).mkdir(parents=True, exist_ok=True)
        with atomic_open(out / 'yolo' / 'data.yaml') as f:
            yaml.safe_dump({'train': 'images', 'val': 'images', 'nc': len(models),
                            'names': {k: models[obj_id].name for obj_id, k in classes.items()}}, f, sort_keys=False)

    with ObjectScene(models, config, seed) as scene:
        tables: dict[str, dict] = {}
        for index in range(num_frames):
            scene_id, im_id = divmod(index, FRAMES_PER_SCENE)
            folder = out / SPLIT / f'{scene_id:06d}'
            if im_id == 0:
                tables = {'scene_camera.json': {}, 'scene_gt.json': {}, 'scene_gt_info.json': {}}
            if index % views_per_layout == 0 and index > 0:
                scene.new_layout()
            elif index > 0:
                scene.new_view()
            frame = scene.render()
            _write_frame(folder, im_id, frame, models, tables, classes if yolo else None, min_visib_fract,
                         out / 'yolo', f'{scene_id:06d}_{im_id:06d}')
            if progress is not None:
                progress(index + 1, num_frames)
    with atomic_open(out / META_FILE) as f:
        yaml.safe_dump(_meta(num_frames=num_frames, complete=True, **meta), f, sort_keys=False)
    return out


def _write_frame(folder: Path, im_id: int, frame: ObjectFrame, models, tables: dict, classes: dict | None,
                 min_visib_fract: float, yolo_dir: Path, yolo_name: str) -> None:
    f, name = frame.frame, f'{im_id:06d}'
    depth_png = metres_to_depth(f.depth_m, '16UC1')
    atomic_imwrite(folder / 'rgb' / f'{name}.png', cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
    atomic_imwrite(folder / 'depth' / f'{name}.png', depth_png)
    T_cam_world = np.linalg.inv(f.T_base_cam)
    gt, info, labels = [], [], []
    for k, instance in enumerate(frame.instances):
        atomic_imwrite(folder / 'mask' / f'{name}_{k:06d}.png', frame.full_masks[k].astype(np.uint8) * 255)
        visible = frame.visible_mask(k)
        atomic_imwrite(folder / 'mask_visib' / f'{name}_{k:06d}.png', visible.astype(np.uint8) * 255)
        R, t = bop_pose(instance.T_cam_obj)
        gt.append({'cam_R_m2c': R, 'cam_t_m2c': t, 'obj_id': instance.obj_id})
        info.append(gt_info(frame, k, models[instance.obj_id], depth_png))
        if classes is not None and info[-1]['px_count_visib'] > 0 and info[-1]['visib_fract'] >= min_visib_fract:
            labels.append(yolo_line(classes[instance.obj_id], visible))
    R_w2c, t_w2c = bop_pose(T_cam_world)
    tables['scene_camera.json'][str(im_id)] = {'cam_K': f.camera.K.reshape(-1).tolist(), 'depth_scale': DEPTH_SCALE,
                                               'cam_R_w2c': R_w2c, 'cam_t_w2c': t_w2c}
    tables['scene_gt.json'][str(im_id)] = gt
    tables['scene_gt_info.json'][str(im_id)] = info
    if classes is not None:
        _link_or_copy(folder / 'rgb' / f'{name}.png', yolo_dir / 'images' / f'{yolo_name}.png')
        with atomic_open(yolo_dir / 'labels' / f'{yolo_name}.txt') as out:
            out.write(''.join(line + '\n' for line in labels))
    for file, table in tables.items():
        _write_json(folder / file, table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f'python -m {GENERATOR}', description=__doc__.split('\n')[0])
    parser.add_argument('--models', required=True, help='BOP model folder: obj_XXXXXX.ply in mm (+ models_info.json)')
    parser.add_argument('--out', required=True, help='output directory (new, or without a dataset in it)')
    parser.add_argument('--frames', type=int, required=True, help='number of frames to render')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (same seed, same data)')
    parser.add_argument('--objects', type=int, default=8, help='objects per layout (drawn with repeats)')
    parser.add_argument('--views-per-layout', type=int, default=5, help='frames per table layout')
    parser.add_argument('--yolo', action='store_true', help='also write YOLO detection labels (yolo/)')
    parser.add_argument('--min-visib-fract', type=float, default=0.1,
                        help='YOLO labels leave out instances less visible than this')
    parser.add_argument('--camera', default='realsense_d435', choices=PRESET_NAMES, help='intrinsics preset')
    add_sensor_arguments(parser, 'kinect_xbox360 or realsense_d435')
    args = parser.parse_args(argv)
    if args.frames < 1 or args.objects < 1 or args.views_per_layout < 1:
        parser.error('--frames, --objects and --views-per-layout must be >= 1')
    config = ObjectSceneConfig(camera=preset(args.camera), objects_per_layout=args.objects,
                               **sensor_settings(args))
    report = progress_printer(args.frames)
    out = write_bop(args.out, args.models, args.frames, config, args.seed, args.views_per_layout, args.yolo,
                    args.min_visib_fract, progress=report)
    print(f'wrote {args.frames} frames to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
