"""Training crops for the object keypoint heatmap network, cut from a BOP folder the data engine rendered.

Every annotated instance visible enough (BOP's visib_fract) gives one sample: the square crop the runtime would cut
around its visible box (objects.crops.square_crop with the runtime's padding), stored at a wider context so that
augmentation can shift and scale the crop as an imprecise detector box would, and the pixels of the object's model
keypoints in it. Targets are amodal: a keypoint has a full peak wherever it projects inside the crop, hidden behind
the object itself or another one or not, because PnP needs the hidden ones too and the paper's keypoint sets (surface
FPS, box corners) always include points on the far side. One network serves an object set: it draws K maps per
object and the loss reads only the instance's own K (objects.keypoint_model picks them the same way at run time).

Augmentation is drawn per sample from a generator seeded by (seed, sample number), as in training.keypoint_data,
whose occluders, colour camera model and target drawing it shares. Horizontal flips are excluded (objects are
chiral). Samples of one table layout (BOP writes `views_per_layout` views of it) never straddle the train / validation
split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from kp_pose_ros.core.heatmaps import input_to_heatmap
from kp_pose_ros.objects.bop import BopDataset
from kp_pose_ros.objects.crops import crop_images, square_crop
from kp_pose_ros.objects.keypoints import ObjectKeypoints
from kp_pose_ros.sim.camera_effects import CameraEffects
from kp_pose_ros.sim.camera_effects import apply as apply_camera_effects
from kp_pose_ros.training import keypoint_data as kd

INPUT_SIZE = 128
HEATMAP_STRIDE = 4
HEATMAP_SIGMA = 1.5
# The runtime crop: the detector's box, square, widened by this fraction (objects.keypoint_model reads it from the
# manifest).
CROP_PADDING = 0.25
# Stored crops hold this much more context than the runtime crop, for the shift and scale augmentation.
STORE_CONTEXT = 1.3
STORE_SIZE = int(round(INPUT_SIZE * STORE_CONTEXT))
MIN_VISIB_FRACT = 0.15
# A layout is `views_per_layout` consecutive images; every VALIDATION_EVERY-th layout is held out.
VALIDATION_EVERY = 10
AUGMENTATIONS = {
    'box': 'scale 0.8-1.25 of the runtime crop, shift +-10 % of its side, rotation +-30 deg (an imprecise box, a '
           'rolled camera)',
    'occluders': 'p=0.4: training.keypoint_data.paste_occluders (real-photo crops, textures, flat colours)',
    'camera': 'p=0.5: sim.camera_effects with training.keypoint_data.TRAIN_EFFECTS (on top of the one baked into '
              'the render)',
    'horizontal_flip': 'never (objects are chiral)',
}


@dataclass
class InstanceSet:
    """Stored crops (N, STORE_SIZE, STORE_SIZE, 3), keypoints in them (N, K, 2), object index (N,) into obj_ids."""

    crops: np.ndarray
    keypoints: np.ndarray
    object_index: np.ndarray
    obj_ids: tuple[int, ...]
    layouts: np.ndarray  # (N,) source * 10**9 + scene * 10**6 + layout number, for the split

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, mask: np.ndarray) -> InstanceSet:
        return InstanceSet(self.crops[mask], self.keypoints[mask], self.object_index[mask], self.obj_ids,
                           self.layouts[mask])


def load_instances(root: str | Path, keypoints: ObjectKeypoints, split: str = 'train_pbr',
                   views_per_layout: int = 5, max_frames: int | None = None, source: int = 0) -> InstanceSet:
    """Every instance of the objects in `keypoints` with visib_fract >= MIN_VISIB_FRACT, as stored crops; `source`
    numbers the folder when several are concatenated."""
    dataset = BopDataset(root, split=split, targets=False)
    obj_ids = tuple(sorted(keypoints.points))
    index_of = {obj_id: i for i, obj_id in enumerate(obj_ids)}
    crops, points, objects, layouts = [], [], [], []
    for n, frame in enumerate(dataset.frames()):
        if max_frames is not None and n >= max_frames:
            break
        chosen = [gt for gt in frame.gts if gt.obj_id in index_of and gt.bbox_visib is not None
                  and (gt.visib_fract or 0.0) >= MIN_VISIB_FRACT and min(gt.bbox_visib[2:]) >= 4]
        if not chosen:
            continue
        rgb = dataset.load_rgb(frame)
        transforms = []
        for gt in chosen:
            x, y, w, h = gt.bbox_visib
            transforms.append(square_crop([x, y, x + w, y + h], STORE_SIZE, padding=(1 + CROP_PADDING) *
                                          STORE_CONTEXT - 1))
            model_points = keypoints.points[gt.obj_id]
            camera = model_points @ gt.T_cam_obj[:3, :3].T + gt.T_cam_obj[:3, 3]
            pixels = camera @ frame.K.T
            points.append(transforms[-1].to_crop(pixels[:, :2] / pixels[:, 2:]))
            objects.append(index_of[gt.obj_id])
            layouts.append(source * 10**9 + frame.scene_id * 10**6 + frame.im_id // views_per_layout)
        crops.append(crop_images(rgb, transforms, pad_value=kd.PAD_VALUE))
    if not crops:
        raise ValueError(f'no instances of objects {list(obj_ids)} with visib_fract >= {MIN_VISIB_FRACT} in {root}')
    return InstanceSet(np.concatenate(crops), np.stack(points).astype(np.float32), np.array(objects),
                       obj_ids, np.array(layouts))


def concatenate(sets: list[InstanceSet]) -> InstanceSet:
    if len({s.obj_ids for s in sets}) != 1:
        raise ValueError('instance sets of different object sets cannot be concatenated')
    return InstanceSet(*(np.concatenate([getattr(s, f) for s in sets])
                         for f in ('crops', 'keypoints', 'object_index')), sets[0].obj_ids,
                       np.concatenate([s.layouts for s in sets]))


def split(instances: InstanceSet) -> tuple[InstanceSet, InstanceSet]:
    """(training, validation): every VALIDATION_EVERY-th table layout is validation."""
    held_out = (instances.layouts % 10**6) % VALIDATION_EVERY == VALIDATION_EVERY - 1
    return instances.subset(~held_out), instances.subset(held_out)


def nominal_affine() -> np.ndarray:
    """Stored crop -> runtime crop, without augmentation (validation)."""
    scale = INPUT_SIZE / STORE_SIZE
    centre = (STORE_SIZE - 1) / 2.0
    M = np.zeros((2, 3))
    M[:, :2] = np.eye(2) * scale
    M[:, 2] = (INPUT_SIZE - 1) / 2.0 - scale * centre
    return M


def _random_affine(rng: np.random.Generator) -> np.ndarray:
    scale = INPUT_SIZE / STORE_SIZE / math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    centre = (STORE_SIZE - 1) / 2.0
    M = cv2.getRotationMatrix2D((centre, centre), rng.uniform(-30.0, 30.0), scale)
    M[:, 2] += (INPUT_SIZE - 1) / 2.0 - centre + rng.uniform(-0.1, 0.1, 2) * INPUT_SIZE
    return M


def sample(instances: InstanceSet, k: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """(input crop (S, S, 3) uint8, keypoints (K, 2) in it, peaks (K,)) of instance k; augmented when `rng`."""
    M = _random_affine(rng) if rng is not None else nominal_affine()
    image = cv2.warpAffine(instances.crops[k], M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(kd.PAD_VALUE,) * 3)
    points = instances.keypoints[k] @ M[:, :2].T + M[:, 2]
    inside = np.all((points >= -0.5) & (points <= INPUT_SIZE - 0.5), axis=1)
    peaks = inside.astype(np.float32)
    if rng is not None:
        if rng.random() < 0.4:
            kd.paste_occluders(image, rng, points[inside])
        if rng.random() < 0.5:
            image = apply_camera_effects(image, CameraEffects.sample(rng, kd.TRAIN_EFFECTS), rng, input_gamma=2.2)
    return image, points.astype(np.float32), peaks


class CropDataset(torch.utils.data.Dataset):
    """(input, target heatmaps (K, S/stride, S/stride), target peaks (K,), keypoints (K, 2) in heatmap pixels,
    object index) per sample; index i >= len is instance i % len with a fresh augmentation (kd.EpochSampler)."""

    def __init__(self, instances: InstanceSet, seed: int, augment: bool = True) -> None:
        self.instances, self.seed, self.augment = instances, seed, augment

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int):
        k = index % len(self.instances)
        rng = np.random.default_rng((self.seed, index)) if self.augment else None
        image, points, peaks = sample(self.instances, k, rng)
        target = kd.gaussian_heatmaps(points, peaks, (INPUT_SIZE, INPUT_SIZE), HEATMAP_STRIDE, HEATMAP_SIGMA)
        heat_points = input_to_heatmap(points, HEATMAP_STRIDE)
        return (torch.from_numpy(kd.normalise(image)), torch.from_numpy(target), torch.from_numpy(peaks),
                torch.from_numpy(heat_points.astype(np.float32)), int(self.instances.object_index[k]))
