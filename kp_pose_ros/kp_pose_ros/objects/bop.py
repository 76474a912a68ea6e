"""A reader for BOP-format datasets (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md):
the real test sets (LINEMOD-Occluded, YCB-V, ...) and what sim.bop_writer renders are read the same way, in metres.

Scene files are read one scene at a time as frames() reaches it, so a large train_pbr split does not sit in memory.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kp_pose_ros.core.camera import CameraModel

_IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif')
_TARGET_FILE = 'test_targets_bop19.json'


@dataclass(frozen=True)
class BopGt:
    """One annotated object instance: its pose, and (where scene_gt_info.json exists) its visible box and fraction."""

    obj_id: int
    T_cam_obj: np.ndarray                              # (4, 4) model -> camera optical frame, metres
    bbox_visib: tuple[int, int, int, int] | None       # x, y, width, height of the visible part (None: none)
    visib_fract: float | None


@dataclass(frozen=True)
class BopFrame:
    scene_id: int
    im_id: int
    K: np.ndarray                # (3, 3)
    depth_scale: float           # depth PNG units in millimetres
    rgb_path: Path               # the rgb/ image, or gray/ where the set has no colour
    depth_path: Path | None
    gts: tuple[BopGt, ...]


class BopDataset:
    """`root` holds camera.json, models_eval/ (or models/) and the split folder of scene folders. With `targets`, a
    test split (test, test_primesense, ...) and a test_targets_bop19.json in `root`, frames() gives only
    the images it lists and, in each, only the instances of the objects it lists (the BOP evaluation set)."""

    def __init__(self, root: str | os.PathLike, split: str = 'test', targets: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f'no BOP dataset folder {self.root}')
        camera = _read_json(self.root / 'camera.json')
        try:
            self.camera = CameraModel.pinhole(int(camera['width']), int(camera['height']), float(camera['fx']),
                                              float(camera['fy']), float(camera['cx']), float(camera['cy']))
            self.depth_scale = float(camera.get('depth_scale', 1.0))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f'{self.root / "camera.json"}: needs width, height, fx, fy, cx, cy: {e!r}') from e
        folders = [self.root / name for name in ('models_eval', 'models')]
        self.models_dir = next((f for f in folders if (f / 'models_info.json').is_file()), None)
        if self.models_dir is None:
            raise FileNotFoundError(f'no models_eval/models_info.json or models/models_info.json in {self.root}')
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f'no split folder {self.split_dir}')
        self.scene_ids = sorted(int(p.name) for p in self.split_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if not self.scene_ids:
            raise FileNotFoundError(f'no scene folders (NNNNNN) in {self.split_dir}')
        self.targets: dict[tuple[int, int], set[int]] | None = None
        target_file = self.root / _TARGET_FILE
        if targets and split.startswith('test') and target_file.is_file():
            self.targets = {}
            try:
                for t in _read_json(target_file):
                    self.targets.setdefault((int(t['scene_id']), int(t['im_id'])), set()).add(int(t['obj_id']))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f'{target_file}: needs a list of {{scene_id, im_id, obj_id}}: {e!r}') from e

    def frames(self) -> Iterator[BopFrame]:
        """The annotated frames, by scene and image id."""
        for scene_id in self.scene_ids:
            yield from self._scene_frames(scene_id)

    def _scene_frames(self, scene_id: int) -> Iterator[BopFrame]:
        folder = self.split_dir / f'{scene_id:06d}'
        gt_file, camera_file, info_file = (folder / f'scene_{k}.json' for k in ('gt', 'camera', 'gt_info'))
        scene_gt, scene_camera = _read_json(gt_file), _read_json(camera_file)
        scene_info = _read_json(info_file) if info_file.is_file() else {}
        for path, data in ((gt_file, scene_gt), (camera_file, scene_camera), (info_file, scene_info)):
            if not isinstance(data, dict) or not all(key.isdigit() for key in data):
                raise ValueError(f'{path}: must map image ids to entries')
        colour = folder / 'rgb' if (folder / 'rgb').is_dir() else folder / 'gray'
        images, depths = _images(colour), _images(folder / 'depth')
        for key in sorted(scene_gt, key=int):
            im_id = int(key)
            wanted = None
            if self.targets is not None:
                wanted = self.targets.get((scene_id, im_id))
                if wanted is None:
                    continue
            if key not in scene_camera:
                raise ValueError(f'{camera_file}: no entry for image {im_id} (it is in {gt_file})')
            if im_id not in images:
                raise FileNotFoundError(f'no image {im_id:06d}.png|jpg in {colour} (it is in {gt_file})')
            try:
                cam = scene_camera[key]
                K = np.array(cam['cam_K'], dtype=float).reshape(3, 3)
                depth_scale = float(cam.get('depth_scale', self.depth_scale))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f'{camera_file}: bad entry for image {im_id}: {e!r}') from e
            gts = _gts(scene_gt[key], scene_info.get(key), gt_file, info_file, im_id)
            if wanted is not None:
                gts = tuple(gt for gt in gts if gt.obj_id in wanted)
            yield BopFrame(scene_id, im_id, K, depth_scale, images[im_id], depths.get(im_id), gts)

    def load_rgb(self, frame: BopFrame) -> np.ndarray:
        """(H, W, 3) uint8 RGB (a gray image repeated in the three channels)."""
        image = cv2.imread(str(frame.rgb_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f'{frame.rgb_path}: not a readable image')
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def load_depth(self, frame: BopFrame) -> np.ndarray:
        """(H, W) float32 depth in metres, NaN where the sensor had no return (0 in the PNG)."""
        if frame.depth_path is None:
            raise FileNotFoundError(f'no depth image for image {frame.im_id} of scene {frame.scene_id} in '
                                    f'{self.split_dir}')
        raw = cv2.imread(str(frame.depth_path), cv2.IMREAD_ANYDEPTH)
        if raw is None or raw.ndim != 2:
            raise ValueError(f'{frame.depth_path}: not a readable single-channel depth image')
        depth = raw.astype(np.float32) * np.float32(frame.depth_scale / 1000.0)
        depth[raw == 0] = np.nan
        return depth


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f'no {path}')
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON: {e}') from e


def _images(folder: Path) -> dict[int, Path]:
    """im_id -> image file of a scene's rgb/, gray/ or depth/ folder (empty where it is absent)."""
    if not folder.is_dir():
        return {}
    return {int(p.stem): p for p in sorted(folder.iterdir())
            if p.suffix.lower() in _IMAGE_SUFFIXES and p.stem.isdigit()}


def _gts(entries, infos, gt_file: Path, info_file: Path, im_id: int) -> tuple[BopGt, ...]:
    if infos is not None and len(infos) != len(entries):
        raise ValueError(f'{info_file}: image {im_id} has {len(infos)} entries, {gt_file} has {len(entries)}')
    gts = []
    for n, entry in enumerate(entries):
        try:
            T = np.eye(4)
            T[:3, :3] = np.array(entry['cam_R_m2c'], dtype=float).reshape(3, 3)
            T[:3, 3] = np.array(entry['cam_t_m2c'], dtype=float).reshape(3) / 1000.0
            obj_id = int(entry['obj_id'])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f'{gt_file}: bad entry {n} of image {im_id}: {e!r}') from e
        bbox, fraction = None, None
        if infos is not None:
            try:
                bbox = tuple(int(v) for v in infos[n]['bbox_visib'])
                fraction = float(infos[n]['visib_fract'])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f'{info_file}: bad entry {n} of image {im_id}: {e!r}') from e
            if len(bbox) != 4:
                raise ValueError(f'{info_file}: entry {n} of image {im_id}: bbox_visib must be x, y, w, h')
            if min(bbox[2:]) < 0:  # BOP writes [-1, -1, -1, -1] for an instance with no visible pixel
                bbox = None
        T.flags.writeable = False
        gts.append(BopGt(obj_id, T, bbox, fraction))
    return tuple(gts)
