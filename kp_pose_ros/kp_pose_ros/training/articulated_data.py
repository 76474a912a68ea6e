"""Training samples for the articulated voting network, packed from datasets sim.procedural_writer rendered.

One sample per articulated instance of a known category with enough visible depth: the observation the estimator
would build (articulated.observation.observe) from the rendered depth (back-projected and edge-filtered as at run
time by robot.depth_alignment.depth_view). The region is the instance mask grown by a random margin, part of whose
ring is kept, so the network learns to label clutter and floor points as background, as a depth-segmentation
region brings them. Per point: a class (0 background, else the category's part, numbered as network_classes says);
per method ('learned', 'fps', 'box') the instance's part keypoints in the observation's normalised frame, from which
the training loop computes every radius target on the fly (cheap, and it follows point resampling).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kp_pose_ros.articulated.categories import ArticulatedInstance, CategoryModel
from kp_pose_ros.articulated.observation import observe
from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.robot.depth_alignment import depth_view

METHODS = ('learned', 'fps', 'box')
MIN_VISIBLE_PX = 300
MARGIN_PX = (0, 24)


def network_classes(models: list[CategoryModel]) -> list[int]:
    """The first segmentation class of each category (class 0 is background; parts follow category by category)."""
    first, out = 1, []
    for model in models:
        out.append(first)
        first += len(model.parts)
    return out


@dataclass
class Samples:
    points: np.ndarray      # (S, N, 3) float32 normalised
    labels: np.ndarray      # (S, N) uint8 network class
    uv: np.ndarray          # (S, N, 2) float16
    crops: np.ndarray       # (S, C, C, 3) uint8
    category: np.ndarray    # (S,) index into the model list
    keypoints: np.ndarray   # (S, M, Kmax, 3) float32 normalised, NaN-padded past the category's P*3
    scale: np.ndarray       # (S,) metres per normalised unit
    layout: np.ndarray      # (S,) (dataset index << 20) + layout_index, for a layout-wise validation split

    def __len__(self) -> int:
        return len(self.points)

    def subset(self, keep: np.ndarray) -> Samples:
        return Samples(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **{f: getattr(self, f) for f in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: str | Path) -> Samples:
        with np.load(path) as data:
            return cls(**{f: data[f] for f in cls.__dataclass_fields__})


def _region(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The instance mask plus a random share of a random ring around it."""
    margin = int(rng.integers(MARGIN_PX[0], MARGIN_PX[1] + 1))
    if margin == 0:
        return mask
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0
    ring = grown & ~mask & (rng.random(mask.shape) < rng.uniform(0.2, 1.0))
    return mask | ring


def pack(dataset_dirs: list[str | Path], models: list[CategoryModel], seed: int, num_points: int,
         log=print) -> Samples:
    """Every usable instance of every frame of `dataset_dirs` whose category is one of `models`."""
    rng = np.random.default_rng(seed)
    index = {m.category: k for k, m in enumerate(models)}
    first = network_classes(models)
    kmax = max(len(m.parts) for m in models) * 3
    instances: dict[str, ArticulatedInstance] = {}
    out = {f: [] for f in Samples.__dataclass_fields__}
    for d, root in enumerate(map(Path, dataset_dirs)):
        lines = (root / 'annotations.jsonl').read_text().splitlines()
        for line in lines:
            frame = json.loads(line)
            wanted = [i for i in frame['instances'] if i['kind'] == 'articulated' and i['category'] in index
                      and i['visible_px'] >= MIN_VISIBLE_PX]
            if not wanted:
                continue
            rgb = cv2.cvtColor(cv2.imread(str(root / frame['rgb'])), cv2.COLOR_BGR2RGB)
            depth = cv2.imread(str(root / frame['depth']), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0
            K = np.asarray(frame['K'])
            camera = CameraModel.pinhole(depth.shape[1], depth.shape[0], K[0, 0], K[1, 1], K[0, 2], K[1, 2])
            points_image = depth_view(np.where(depth > 0, depth, np.nan), camera).points
            instance_png = cv2.imread(str(root / frame['instance_mask']), cv2.IMREAD_UNCHANGED)
            part_png = cv2.imread(str(root / frame['part_mask']), cv2.IMREAD_UNCHANGED)
            for inst in wanted:
                c = index[inst['category']]
                model = models[c]
                if inst['asset'] not in instances:
                    instances[inst['asset']] = ArticulatedInstance(root / inst['asset'], inst['category'])
                art = instances[inst['asset']]
                if art.part_names != model.part_names:
                    raise ValueError(f'{inst["name"]} has parts {art.part_names}, the category model '
                                     f'{model.part_names}')
                mask = instance_png == inst['mask_value']
                obs = observe(rgb, points_image, _region(mask, rng), rng, num_points)
                if obs is None:
                    continue
                flat_mask, flat_part = mask.reshape(-1)[obs.source], part_png.reshape(-1)[obs.source]
                labels = np.where(flat_mask & (flat_part > 0), first[c] + flat_part.astype(np.int64) - 1, 0)
                parts = sorted(inst['parts'], key=lambda p: p['part_id'])
                if tuple(p['name'] for p in parts) != art.part_names:
                    raise ValueError(f'{inst["name"]}: part ids order the parts {[p["name"] for p in parts]}, the '
                                     f'URDF {art.part_names}')
                T_cam_part = np.array([p['T_cam_part'] for p in parts])
                kps = np.full((len(METHODS), kmax, 3), np.nan, np.float32)
                for m, method in enumerate(METHODS):
                    local = art.keypoints(model.keypoints(method))  # (P, 3, 3) link frames
                    cam = np.einsum('pij,pkj->pki', T_cam_part[:, :3, :3], local) + T_cam_part[:, None, :3, 3]
                    kps[m, :cam.shape[0] * 3] = (cam.reshape(-1, 3) - obs.centre) / obs.scale
                out['points'].append(obs.normalised)
                out['labels'].append(labels.astype(np.uint8))
                out['uv'].append(obs.uv.astype(np.float16))
                out['crops'].append(obs.crop)
                out['category'].append(c)
                out['keypoints'].append(kps)
                out['scale'].append(obs.scale)
                out['layout'].append((d << 20) + int(frame['layout_index']))
        log(f'{root}: {len(lines)} frames, {len(out["points"])} samples so far')
    if not out['points']:
        raise ValueError(f'no usable instances of {[m.category for m in models]} in {dataset_dirs}')
    return Samples(*(np.asarray(out[f]) for f in Samples.__dataclass_fields__))
