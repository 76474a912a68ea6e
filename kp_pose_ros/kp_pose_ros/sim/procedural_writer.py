"""Synthetic data for the articulated (PAGE) and category-level (NOCS / MK-Pose) pipelines, rendered from
sim.procedural_scene layouts of procedural instances.

Layout (LAYOUT_VERSION 1) of DIR:
    meta.yaml            generator, layout_version, kind, seed, split, num_frames, complete, views_per_layout,
                         camera (width, height, K), depth_unit_m, categories, scene settings
    annotations.jsonl    one JSON object per frame, in frame order (see below)
    rgb/000000.png       colour, 8-bit
    depth/000000.png     uint16 depth along the optical axis in mm, 0 = no return
    instance/000000.png  uint16: 0 = no instance, v > 0 = the frame's instances[v - 1] (visible pixels)
    part/000000.png      uint8: 0 = no instance, v > 0 = part_id v - 1 of the instance drawn there (rigid: 1)
    assets/<category>_<seed>/  articulated instances: <name>.urdf + one OBJ per link (vertex colours)
    assets/<category>_<seed>.ply  rigid instances in the NOCS canonical frame (metres, vertex colours)

Annotation fields: index, rgb, depth, instance_mask, part_mask (paths relative to DIR), layout_index, K (3x3),
T_world_cam (4x4 camera optical frame in the world, z up), instances: [{mask_value, kind ('rigid' | 'articulated'),
category, instance_id (its seed in sim.procedural), split, name, asset (path relative to DIR), T_cam_obj (4x4,
metres), size_m (bbox extents in the object frame: NOCS size; articulated: closed state), visible_px, parts
(articulated: [{name, part_id, T_cam_part, visible_px}]), joints (articulated: [{name, type, state (rad | m),
limits, axis_obj, origin_obj (a point on the axis), child_part}])}]. Object frames as sim.procedural defines them.

--kind category: rigid instances on a table, no articulated objects; articulated: articulated objects only (on the
floor, no table); mixed: both. Crash safety as sim.dataset: images written atomically, then the frame's line appended
in one write; meta.yaml says complete: true only after the last frame. Deterministic for (kind, config, seed, frames).

CLI: python -m kp_pose_ros.sim.procedural_writer --out DIR --frames N --seed S [--kind category|articulated|mixed]
     [--categories C ...] [--split train|test] [--camera PRESET] [--depth-sensor NAME] [--camera-effects]
     [--views-per-layout V]
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
from kp_pose_ros.core.image_codec import metres_to_depth
from kp_pose_ros.sim.camera_presets import PRESET_NAMES, preset
from kp_pose_ros.sim.procedural import ARTICULATED_CATEGORIES, CATEGORIES, SPLITS, split_of
from kp_pose_ros.sim.procedural_scene import ProceduralFrame, ProceduralScene, ProceduralSceneConfig
from kp_pose_ros.sim.writer_cli import add_sensor_arguments, progress_printer, sensor_settings

LAYOUT_VERSION = 1
GENERATOR = 'kp_pose_ros.sim.procedural_writer'
META_FILE = 'meta.yaml'
ANNOTATIONS_FILE = 'annotations.jsonl'
KINDS = ('category', 'articulated', 'mixed')


def config_for(kind: str, categories=None, **settings) -> ProceduralSceneConfig:
    """A scene config for one kind of data; `categories` (rigid and/or articulated names) narrows the default set;
    instance counts of a kind the data leaves out are 0."""
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    chosen = tuple(categories) if categories else CATEGORIES + ARTICULATED_CATEGORIES
    rigid = tuple(c for c in chosen if c in CATEGORIES) if kind != 'articulated' else ()
    articulated = tuple(c for c in chosen if c in ARTICULATED_CATEGORIES) if kind != 'category' else ()
    unknown = [c for c in chosen if c not in CATEGORIES + ARTICULATED_CATEGORIES]
    if unknown:
        raise ValueError(f'unknown categories {unknown}; rigid: {CATEGORIES}, articulated: {ARTICULATED_CATEGORIES}')
    defaults = ProceduralSceneConfig()
    if kind == 'articulated':  # floor-standing cabinets up to 1 m tall: step back to see them whole
        settings.setdefault('distance_range_m', (1.6, 3.0))
    rigid_counts = settings.pop('rigid_per_layout', defaults.rigid_per_layout)
    articulated_counts = settings.pop('articulated_per_layout', defaults.articulated_per_layout)
    return ProceduralSceneConfig(categories=rigid, articulated_categories=articulated,
                                 rigid_per_layout=rigid_counts if rigid else (0, 0),
                                 articulated_per_layout=articulated_counts if articulated else (0, 0), **settings)


def _meta(kind: str, config: ProceduralSceneConfig, seed: int, num_frames: int, views_per_layout: int,
          complete: bool) -> dict:
    cam = config.camera
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != 'camera'}
    return {'generator': GENERATOR, 'layout_version': LAYOUT_VERSION, 'kind': kind, 'seed': int(seed),
            'split': config.split, 'num_frames': int(num_frames), 'complete': complete,
            'views_per_layout': int(views_per_layout),
            'camera': {'width': cam.width, 'height': cam.height, 'K': cam.K.tolist()}, 'depth_unit_m': 0.001,
            'categories': list(config.categories), 'articulated_categories': list(config.articulated_categories),
            'config': json.loads(json.dumps(settings))}


def _asset(scene: ProceduralScene, out: Path, body: int) -> str:
    """The instance's model under out/assets (written once), relative to out."""
    if body in scene.articulated:
        return scene.articulated[body].urdf.relative_to(out).as_posix()
    instance = scene.rigid[body]
    path = out / 'assets' / f'{instance.name}.ply'
    if not path.exists():
        with atomic_open(path, 'wb') as f:
            f.write(instance.mesh.export(file_type='ply'))
    return path.relative_to(out).as_posix()


def _annotation(index: int, layout: int, frame: ProceduralFrame, assets: list[str], paths: dict) -> dict:
    f = frame.frame
    instances = []
    for k, inst in enumerate(frame.instances):
        mask = frame.instance_mask(k)
        entry = {'mask_value': k + 1, 'kind': inst.kind, 'category': inst.category, 'instance_id': inst.instance_id,
                 'split': split_of(inst.instance_id), 'name': inst.name, 'asset': assets[k],
                 'T_cam_obj': inst.T_cam_obj.tolist(), 'size_m': np.asarray(inst.size_m).tolist(),
                 'visible_px': int(mask.sum()), 'parts': [], 'joints': []}
        for part in inst.parts:
            entry['parts'].append({'name': part.name, 'part_id': part.part_id, 'T_cam_part': part.T_cam_part.tolist(),
                                   'visible_px': int(frame.part_mask(k, part.part_id).sum())})
        for j in inst.joints:
            entry['joints'].append({'name': j.name, 'type': j.type, 'state': j.state, 'limits': list(j.limits),
                                    'axis_obj': j.axis_obj.tolist(), 'origin_obj': j.origin_obj.tolist(),
                                    'child_part': j.child_part})
        instances.append(entry)
    return {'index': index, **paths, 'layout_index': layout, 'K': f.camera.K.tolist(),
            'T_world_cam': f.T_base_cam.tolist(), 'instances': instances}


def write_procedural(out_dir: str | os.PathLike, num_frames: int, kind: str = 'mixed',
                     config: ProceduralSceneConfig | None = None, seed: int = 0, views_per_layout: int = 5,
                     progress: Callable[[int, int], None] | None = None) -> Path:
    """Render `num_frames` frames into `out_dir` (created; must not already hold a dataset). `config` defaults to
    config_for(kind). Returns the output directory."""
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f'num_frames must be a positive integer, got {num_frames}')
    if int(views_per_layout) != views_per_layout or views_per_layout < 1:
        raise ValueError(f'views_per_layout must be a positive integer, got {views_per_layout}')
    config = config if config is not None else config_for(kind)
    out = Path(out_dir)
    for existing in (META_FILE, ANNOTATIONS_FILE):
        if (out / existing).exists():
            raise FileExistsError(f'{out / existing} exists: write each dataset into a new directory')
    for sub in ('rgb', 'depth', 'instance', 'part', 'assets'):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with atomic_open(out / META_FILE) as f:
        yaml.safe_dump(_meta(kind, config, seed, 0, views_per_layout, False), f, sort_keys=False)
    with ProceduralScene(config, seed, asset_dir=out / 'assets') as scene:
        fd = os.open(out / ANNOTATIONS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for index in range(num_frames):
                if index > 0 and index % views_per_layout == 0:
                    scene.new_layout()
                elif index > 0:
                    scene.new_view()
                frame = scene.render()
                name = f'{index:06d}.png'
                paths = {key: f'{key}/{name}' for key in ('rgb', 'depth')}
                paths |= {'instance_mask': f'instance/{name}', 'part_mask': f'part/{name}'}
                instance_png = np.zeros(frame.frame.object_seg.shape, np.uint16)
                part_png = np.zeros(frame.frame.object_seg.shape, np.uint8)
                for k in range(len(frame.instances)):
                    mask = frame.instance_mask(k)
                    instance_png[mask] = k + 1
                    part_png[mask] = np.clip(frame.frame.part_seg[mask] + 1, 1, 255)
                atomic_imwrite(out / paths['rgb'], cv2.cvtColor(frame.frame.rgb, cv2.COLOR_RGB2BGR))
                atomic_imwrite(out / paths['depth'], metres_to_depth(frame.frame.depth_m, '16UC1'))
                atomic_imwrite(out / paths['instance_mask'], instance_png)
                atomic_imwrite(out / paths['part_mask'], part_png)
                assets = [_asset(scene, out, inst.body) for inst in frame.instances]
                record = _annotation(index, index // views_per_layout, frame, assets, paths)
                append_json_line(fd, record, out / ANNOTATIONS_FILE)
                if progress is not None:
                    progress(index + 1, num_frames)
        finally:
            os.close(fd)
    with atomic_open(out / META_FILE) as f:
        yaml.safe_dump(_meta(kind, config, seed, num_frames, views_per_layout, True), f, sort_keys=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f'python -m {GENERATOR}', description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='output directory (new, or without a dataset in it)')
    parser.add_argument('--frames', type=int, required=True, help='number of frames to render')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (same seed, same data)')
    parser.add_argument('--kind', default='mixed', choices=KINDS, help='rigid categories, articulated, or both')
    parser.add_argument('--categories', nargs='+', choices=CATEGORIES + ARTICULATED_CATEGORIES,
                        help='only these categories (default: all of the kind)')
    parser.add_argument('--split', default='train', choices=tuple(SPLITS), help='instance seeds to draw from')
    parser.add_argument('--views-per-layout', type=int, default=5, help='frames per layout')
    parser.add_argument('--camera', default='realsense_d435', choices=PRESET_NAMES, help='intrinsics preset')
    add_sensor_arguments(parser)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.views_per_layout < 1:
        parser.error('--frames and --views-per-layout must be >= 1')
    try:
        config = config_for(args.kind, args.categories, camera=preset(args.camera), split=args.split,
                            **sensor_settings(args))
    except ValueError as exc:
        parser.error(str(exc))
    report = progress_printer(args.frames)
    out = write_procedural(args.out, args.frames, args.kind, config, args.seed, args.views_per_layout, report)
    print(f'wrote {args.frames} frames to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
