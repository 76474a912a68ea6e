"""Synthetic data for the robot keypoint heatmap network: rendered shards, loading into memory, augmentation.

Training frames come from the project's own SimScene, written with sim.dataset in shards of a few hundred frames.
A scene has one camera, so each shard draws its own horizontal field of view, aspect ratio (4:3 or 16:9), number of
distractor objects and shadows; every frame draws a new collision-free arm pose, camera pose, lighting, floor and
backdrop. Cameras come closer and aim further off the robot than SceneConfig's defaults, so part of the arm often
leaves the image (truncation). Shards are rendered at the network's input width, so loading is a letterbox and no
resampling. Validation shards are rendered at the full resolution of the three cameras of RoboKeyGen's cross-camera
study, which is what the detector meets at run time (downscaled by the letterbox).

Augmentation is drawn per sample from a generator seeded by (seed, sample number), so a run is reproducible whatever
the number of loader workers. Horizontal flips are excluded: the Panda's joint offsets make it chiral, so a mirrored
image shows an arm no Panda pose produces, and no relabelling of the keypoints turns it into one.
"""
from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from kp_pose_ros.core.heatmaps import input_to_heatmap
from kp_pose_ros.core.letterbox import Letterbox
from kp_pose_ros.sim.backgrounds import random_background
from kp_pose_ros.sim.camera_effects import CameraEffects, EffectRanges
from kp_pose_ros.sim.camera_effects import apply as apply_camera_effects
from kp_pose_ros.sim.camera_presets import PAPER_EVAL_CAMERAS, camera_from_fov
from kp_pose_ros.sim.dataset import load_annotations, load_frame, load_meta, write_dataset
from kp_pose_ros.sim.photos import random_photo_crop
from kp_pose_ros.sim.scene import SceneConfig

INPUT_SIZE = (320, 240)
HEATMAP_STRIDE = 4
# Training sees random crops of the (augmented) input: the network is fully convolutional, and a crop costs 36 % less
# to train on than the whole input, so more samples fit the CPU budget. Validation and run time use the whole input.
TRAIN_CROP_SIZE = (256, 192)
HEATMAP_SIGMA = 2.0
# Target peak of a keypoint in the image but hidden (by another link, an object or a pasted occluder). Visible ones
# peak at 1, those outside the image have no peak. A low peak keeps the guessed position in the map for callers that
# want it, while a confidence threshold above it (the manifest's, chosen for 95 % reliability) drops the guess: a
# user must be able to trust a keypoint reported above the threshold.
OCCLUDED_PEAK = 0.2
PAD_VALUE = 114
# ImageNet statistics: any fixed normalisation works for a network trained from scratch; these are the usual ones.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

TRAIN_HFOV_RANGE_DEG = (55.0, 95.0)
TRAIN_SIZES = {'4:3': (320, 240), '16:9': (320, 180)}
WIDE_ASPECT_CHANCE = 1 / 3
# Shadows double TinyRenderer's time and cost the PBR renderer 1.7x: a share of shards has them.
SHADOW_CHANCE = {'tiny': 1 / 6, 'pbr': 1 / 2}
RENDERERS = ('pbr', 'tiny')
# Wider than EffectRanges' defaults (a user's camera, settings and light are unknown): the network must not care.
TRAIN_EFFECTS = EffectRanges(exposure=(0.35, 2.2), white_balance_k=(2500.0, 9500.0), defocus_radius=(0.5, 2.0),
                             motion_length=(2.0, 8.0), gamma=(1.6, 2.8), contrast=(0.6, 1.4), saturation=(0.4, 1.5),
                             p_defocus=0.2, p_motion=0.1, p_tone=0.7, p_jpeg=0.3)
# Validation renders carry one realistic camera per frame (EffectRanges' defaults), baked into the images.
VALIDATION_EFFECTS = EffectRanges()
MAX_DISTRACTORS = 6
# The three simulated cameras of RoboKeyGen's cross-camera study: name -> (width, height, HFOV deg).
VALIDATION_DISTRACTORS = 4
# Seeds of validation shards are offset from training ones so the two never share a scene.
VALIDATION_SEED_OFFSET = 10**9
# Wider than SceneConfig's defaults: closer cameras, aimed further off the robot (truncation), lower and higher views,
# harsher and more coloured light.
SCENE_RANGES = dict(
    distance_range_m=(0.6, 2.3), look_at_jitter_m=0.3, elevation_range_deg=(-5.0, 65.0), roll_jitter_deg=10.0,
    light_elevation_range_deg=(10.0, 90.0), light_color_jitter=0.35, ambient_range=(0.2, 0.8),
    diffuse_range=(0.2, 0.9), specular_range=(0.0, 0.6), working_pose_chance=0.5,
)
AUGMENTATIONS = {
    'affine': 'p=0.8: scale 0.7-1.35, rotation +-15 deg (camera roll), shift +-12 % of the input',
    'crop': f'random {TRAIN_CROP_SIZE[0]}x{TRAIN_CROP_SIZE[1]} window of the {INPUT_SIZE[0]}x{INPUT_SIZE[1]} input',
    'camera': 'sim.camera_effects.CameraEffects.sample(TRAIN_EFFECTS) per sample, after the occluders: exposure, '
              'white balance, defocus and motion blur, shot and read noise, gamma, contrast, saturation, JPEG',
    'occluders': 'p=0.5: 1-3 shapes filled with real-photo crops, procedural textures or flat colours, 5-30 % of '
                 'the input side each, the first on a keypoint half of the time; keypoints under them get target '
                 f'peak {OCCLUDED_PEAK}',
    'horizontal_flip': 'never (a mirrored Panda is not a Panda pose)',
}


@dataclass(frozen=True)
class ShardSpec:
    """One rendered shard: a scene with its own camera and clutter, `frames` frames from seed `seed`."""

    name: str
    width: int
    height: int
    hfov_deg: float
    num_distractors: int
    shadows: bool
    seed: int
    frames: int
    renderer: str = 'pbr'
    effects: EffectRanges | None = None

    def scene_config(self) -> SceneConfig:
        return SceneConfig(camera=camera_from_fov(self.width, self.height, self.hfov_deg),
                           num_distractors=self.num_distractors, shadows=self.shadows, renderer=self.renderer,
                           camera_effects=self.effects, **SCENE_RANGES)


def training_shards(seed: int, num_frames: int, shard_frames: int = 200, renderer: str = 'pbr') -> list[ShardSpec]:
    """Shards covering `num_frames` training frames, their cameras and clutter drawn from `seed`; clean images
    (camera effects are drawn per sample by augment)."""
    if num_frames < 1 or shard_frames < 1:
        raise ValueError(f'num_frames and shard_frames must be >= 1, got {num_frames}, {shard_frames}')
    rng = np.random.default_rng(seed)
    specs = []
    for k in range(math.ceil(num_frames / shard_frames)):
        aspect = '16:9' if rng.random() < WIDE_ASPECT_CHANCE else '4:3'
        width, height = TRAIN_SIZES[aspect]
        hfov = round(float(rng.uniform(*TRAIN_HFOV_RANGE_DEG)), 2)
        specs.append(ShardSpec(
            name=f'train_{k:03d}', width=width, height=height, hfov_deg=hfov,
            num_distractors=int(rng.integers(0, MAX_DISTRACTORS + 1)),
            shadows=bool(rng.random() < SHADOW_CHANCE[renderer]), seed=seed * 10_000 + k,
            frames=min(shard_frames, num_frames - k * shard_frames), renderer=renderer))
    return specs


def validation_shards(seed: int, frames_per_camera: int, renderer: str = 'pbr') -> list[ShardSpec]:
    """One shard per evaluation camera at its full resolution, with distractors, the training view ranges and (PBR)
    a realistic camera per frame."""
    return [ShardSpec(name=f'val_{name}', width=w, height=h, hfov_deg=hfov, num_distractors=VALIDATION_DISTRACTORS,
                      shadows=renderer == 'pbr', seed=VALIDATION_SEED_OFFSET + seed * 10_000 + k,
                      frames=frames_per_camera, renderer=renderer,
                      effects=VALIDATION_EFFECTS if renderer == 'pbr' else None)
            for k, (name, (w, h, hfov)) in enumerate(PAPER_EVAL_CAMERAS.items())]


def _shard_complete(path: Path, spec: ShardSpec) -> bool:
    try:
        meta = load_meta(path)
    except (FileNotFoundError, ValueError):
        return False
    return bool(meta.get('complete')) and meta.get('num_frames') == spec.frames and meta.get('seed') == spec.seed


def _render_shard(root: str, spec: ShardSpec) -> str:
    path = Path(root) / spec.name
    if path.exists():
        shutil.rmtree(path)  # an interrupted shard: write_dataset refuses to append to it
    write_dataset(path, spec.frames, spec.scene_config(), seed=spec.seed)
    return spec.name


GENERATION_LOG = 'generation.yaml'


def render_shards(root: str | Path, specs: Sequence[ShardSpec], workers: int = 2,
                  log: Callable[[str], None] = print) -> int:
    """Render the shards of `specs` not yet complete under `root`, in `workers` processes. Returns how many.

    Each call that renders appends its shard count and wall time to root/generation.yaml (see generation_time_s)."""
    root = Path(root)
    todo = [s for s in specs if not _shard_complete(root / s.name, s)]
    if not todo:
        return 0
    root.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, name in enumerate(pool.map(_render_shard, [str(root)] * len(todo), todo), start=1):
            log(f'rendered shard {name} ({done}/{len(todo)}, {time.monotonic() - start:.0f} s)')
    entry = {'shards': [s.name for s in todo], 'frames': sum(s.frames for s in todo), 'workers': workers,
             'wall_time_s': round(time.monotonic() - start, 1)}
    with open(root / GENERATION_LOG, 'a', encoding='utf-8') as f:
        yaml.safe_dump([entry], f, sort_keys=False, width=1000)
    return len(todo)


def generation_time_s(root: str | Path, specs: Sequence[ShardSpec]) -> float:
    """Wall time spent rendering the given shards, from root/generation.yaml (calls that rendered any of them)."""
    path = Path(root) / GENERATION_LOG
    if not path.is_file():
        return math.nan
    with open(path, encoding='utf-8') as f:
        entries = yaml.safe_load(f) or []
    names = {s.name for s in specs}
    return float(sum(e['wall_time_s'] for e in entries if names & set(e['shards'])))


@dataclass
class FrameSet:
    """Frames letterboxed into the network input, with keypoints in input pixels and in original pixels."""

    images: np.ndarray        # (F, H, W, 3) uint8 RGB, letterboxed
    content: np.ndarray       # (F, 4) int: x0, y0, width, height of the image content inside the padding
    keypoints: np.ndarray     # (F, K, 2) input pixels (NaN behind the camera)
    keypoints_px: np.ndarray  # (F, K, 2) original-image pixels
    in_image: np.ndarray      # (F, K) bool
    visible: np.ndarray       # (F, K) bool
    boxes: list[Letterbox]    # per frame
    shard: np.ndarray         # (F,) index into `specs`
    specs: list[ShardSpec]
    keypoint_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def load_frames(root: str | Path, specs: Sequence[ShardSpec], input_size=INPUT_SIZE,
                pad_value: int = PAD_VALUE) -> FrameSet:
    """Every frame of the given (complete) shards, letterboxed to `input_size`, in memory."""
    root = Path(root)
    images, content, keypoints, pixels, in_image, visible, boxes, shard = [], [], [], [], [], [], [], []
    names = None
    for k, spec in enumerate(specs):
        path = root / spec.name
        if not _shard_complete(path, spec):
            raise FileNotFoundError(f'{path} is missing or incomplete: render it first (render_shards)')
        box = Letterbox.fit((spec.width, spec.height), input_size)
        for ann in load_annotations(path):
            if names is None:
                names = tuple(ann['keypoint_names'])
            elif tuple(ann['keypoint_names']) != names:
                raise ValueError(f'{path}: keypoints {ann["keypoint_names"]} differ from {list(names)}')
            rgb, _, _ = load_frame(path, ann)
            images.append(box.apply(rgb, pad_value))
            content.append((box.pad_x, box.pad_y) + box.resized_size)
            keypoints.append(box.to_input(ann['keypoints_px']))
            pixels.append(ann['keypoints_px'])
            in_image.append(ann['in_image'])
            visible.append(ann['visible'])
            boxes.append(box)
            shard.append(k)
    if names is None:
        raise ValueError(f'no frames under {root} for {len(specs)} shards')
    return FrameSet(np.stack(images), np.array(content), np.array(keypoints), np.array(pixels),
                    np.array(in_image), np.array(visible), boxes, np.array(shard), list(specs), names)


def normalise(images: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., 3, H, W) float32, the network's input normalisation."""
    x = (np.asarray(images, dtype=np.float32) - np.float32(MEAN_RGB)) / np.float32(STD_RGB)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def target_peaks(in_image: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Per-keypoint target peak: 1 where visible, OCCLUDED_PEAK where in the image but hidden, 0 outside."""
    in_image, visible = np.asarray(in_image, dtype=bool), np.asarray(visible, dtype=bool)
    return np.where(visible & in_image, 1.0, np.where(in_image, OCCLUDED_PEAK, 0.0)).astype(np.float32)


def gaussian_heatmaps(points_input: np.ndarray, peaks: np.ndarray, input_size=INPUT_SIZE,
                      stride: int = HEATMAP_STRIDE, sigma: float = HEATMAP_SIGMA) -> np.ndarray:
    """(K, H/stride, W/stride) float32 targets: a Gaussian at each keypoint scaled to its peak (see target_peaks)."""
    width, height = input_size[0] // stride, input_size[1] // stride
    centres = input_to_heatmap(np.nan_to_num(points_input), stride)
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    gx = np.exp(-0.5 * ((xs[None, :] - centres[:, :1]) / sigma) ** 2)
    gy = np.exp(-0.5 * ((ys[None, :] - centres[:, 1:]) / sigma) ** 2)
    maps = gy[:, :, None] * gx[:, None, :] * np.asarray(peaks, dtype=np.float64)[:, None, None]
    return maps.astype(np.float32)


def _random_affine(rng: np.random.Generator, size) -> np.ndarray:
    width, height = size
    scale = math.exp(rng.uniform(math.log(0.7), math.log(1.35)))
    angle = rng.uniform(-15.0, 15.0)
    M = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, scale)
    M[:, 2] += rng.uniform(-0.12, 0.12, 2) * [width, height]
    return M


def paste_occluders(image: np.ndarray, rng: np.random.Generator, targets: np.ndarray) -> np.ndarray:
    """Paste 1-3 random shapes over `image` in place, the first centred on one of `targets` (keypoint pixels) half
    of the time, so hidden keypoints are common enough to learn from; returns the (H, W) bool mask they cover."""
    height, width = image.shape[:2]
    covered = np.zeros((height, width), bool)
    for k in range(int(rng.integers(1, 4))):
        w = max(2, int(rng.uniform(0.05, 0.3) * width))
        h = max(2, int(rng.uniform(0.05, 0.3) * height))
        x, y = int(rng.integers(-w // 2, width - w // 2)), int(rng.integers(-h // 2, height - h // 2))
        if k == 0 and len(targets) and rng.random() < 0.5:
            cx, cy = targets[int(rng.integers(len(targets)))]
            x, y = int(cx) - w // 2 + int(rng.integers(-w // 4, w // 4 + 1)), int(cy) - h // 2

        mask = np.zeros((h, w), np.uint8)
        kind = int(rng.integers(3))
        if kind == 0:
            mask[:] = 1
        elif kind == 1:
            cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0.0, 0.0, 360.0, 1, -1)
        else:
            points = rng.uniform([0, 0], [w, h], size=(int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(mask, [cv2.convexHull(points)], 1)
        kind_of_fill = rng.random()
        if kind_of_fill < 0.4:
            fill = random_photo_crop(rng, h, w, fallback=random_background)
        elif kind_of_fill < 0.7:
            fill = random_background(rng, h, w)
        else:
            fill = np.full((h, w, 3), rng.uniform(0, 255, 3))
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            continue
        region = mask[y0 - y:y1 - y, x0 - x:x1 - x].astype(bool)
        image[y0:y1, x0:x1][region] = fill[y0 - y:y1 - y, x0 - x:x1 - x][region]
        covered[y0:y1, x0:x1] |= region
    return covered


def _motion_kernel(rng: np.random.Generator) -> np.ndarray:
    length = int(rng.integers(3, 10))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2.0, (length - 1) / 2.0), rng.uniform(0.0, 180.0), 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return kernel / max(kernel.sum(), 1e-6)


def augment(image: np.ndarray, keypoints: np.ndarray, peaks: np.ndarray, content: Sequence[int],
            rng: np.random.Generator, crop_size=TRAIN_CROP_SIZE, pad_value: int = PAD_VALUE
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image cropped to crop_size, keypoints, peaks) after a random geometric and photometric augmentation (see
    AUGMENTATIONS).

    Padding stays exactly `pad_value`, as the letterbox makes it at run time. A keypoint keeps its target peak (see
    target_peaks) while it lands inside the crop and the letterboxed content, drops to 0 outside, and to at most
    OCCLUDED_PEAK under a pasted occluder.
    """
    height, width = image.shape[:2]
    crop_w, crop_h = crop_size
    x0, y0, cw, ch = content
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y0 + ch, x0:x0 + cw] = 1
    M = _random_affine(rng, (width, height)) if rng.random() < 0.8 else np.eye(2, 3)
    M[:, 2] -= [rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)]
    image = cv2.warpAffine(image, M, (crop_w, crop_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(pad_value,) * 3)
    mask = cv2.warpAffine(mask, M, (crop_w, crop_h), flags=cv2.INTER_NEAREST, borderValue=0)
    keypoints = keypoints @ M[:, :2].T + M[:, 2]
    cols, rows = np.round(np.nan_to_num(keypoints, nan=-1.0)).astype(int).T
    inside = (cols >= 0) & (cols < crop_w) & (rows >= 0) & (rows < crop_h)
    inside[inside] = mask[rows[inside], cols[inside]] > 0
    peaks = np.where(inside, peaks, 0.0).astype(np.float32)

    if rng.random() < 0.5:
        covered = paste_occluders(image, rng, np.column_stack([cols, rows])[inside & (peaks > 0)])
        hidden = inside.copy()
        hidden[inside] = covered[rows[inside], cols[inside]]
        peaks[hidden] = np.minimum(peaks[hidden], OCCLUDED_PEAK)
    out = apply_camera_effects(image, CameraEffects.sample(rng, TRAIN_EFFECTS), rng, input_gamma=2.2)
    out[mask == 0] = pad_value
    return out, keypoints, peaks


class HeatmapDataset(torch.utils.data.Dataset):
    """Augmented, cropped (input, target heatmaps, target peaks) samples. Index i >= len(frames) is frame
    i % len(frames) with a fresh augmentation: samplers hand out `epoch * len + k`, which keeps every epoch's draws
    distinct and seeded."""

    def __init__(self, frames: FrameSet, seed: int) -> None:
        self.frames, self.seed = frames, seed

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        f = self.frames
        k = index % len(f)
        rng = np.random.default_rng((self.seed, index))
        peaks = target_peaks(f.in_image[k], f.visible[k])
        image, keypoints, peaks = augment(f.images[k], f.keypoints[k], peaks, f.content[k], rng)
        target = gaussian_heatmaps(keypoints, peaks, image.shape[1::-1])
        return torch.from_numpy(normalise(image)), torch.from_numpy(target), torch.from_numpy(peaks)


class EpochSampler(torch.utils.data.Sampler):
    """A seeded shuffle per epoch, yielding epoch * n + k so HeatmapDataset draws new augmentations each epoch."""

    def __init__(self, size: int, seed: int, epochs: int) -> None:
        self.size, self.seed, self.epochs = size, seed, epochs

    def __len__(self) -> int:
        return self.size * self.epochs

    def __iter__(self):
        for epoch in range(self.epochs):
            order = np.random.default_rng((self.seed, 7919, epoch)).permutation(self.size)
            yield from (epoch * self.size + order).tolist()
