"""Train, export and evaluate the 2D robot keypoint heatmap network (RoboKeyGen §III-A.1, detection network).

    python -m kp_pose_ros.training.train_keypoints --out kp_pose_ros/models --seed 0

renders the synthetic training and validation shards if they are not under --data yet (training.keypoint_data),
trains a ResNet-18-style heatmap network from scratch (no pretrained weights can be downloaded here), exports it to
ONNX, checks onnxruntime against torch, and writes robot_keypoints_panda.yaml beside it with the preprocessing,
decoding, training record, validation accuracy measured through robot.keypoints (exactly what ships) and CPU
latency. The paper trains its detector far longer on a GPU; this one trains within a fixed wall-clock budget on a
2-core CPU, so training stops at --steps or --time-budget-min, whichever comes first, and the cosine learning-rate
schedule follows whichever is further along.
"""
from __future__ import annotations

import argparse
import copy
import math
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.models.resnet import BasicBlock, conv1x1

from kp_pose_ros.core.heatmaps import decode_heatmaps, heatmap_to_input
from kp_pose_ros.robot import keypoint_accuracy as ka
from kp_pose_ros.robot.keypoints import RobotKeypointDetector
from kp_pose_ros.sim.photos import licence_records
from kp_pose_ros.training import keypoint_data as kd

MODEL_NAME = 'robot_keypoints_panda'
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = 'image', 'heatmaps'
SMOOTHING_CANDIDATES = (0.0, 0.5, 1.0, 1.5, 2.0)
# Foreground pixels of the MSE weigh up to this much more than background: without it a network trained from
# scratch first settles on all-zero maps (the keypoint Gaussians are ~0.3 % of the pixels).
FOREGROUND_WEIGHT = 9.0


# ----------------------------------------------------------------------------------------------------- network
def _stage(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    """Two torchvision BasicBlocks, as in a ResNet-18 stage."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))


def _up(inplanes: int, planes: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(inplanes, planes, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(planes), nn.ReLU(inplace=True))


class KeypointHeatmapNet(nn.Module):
    """ResNet-18 stem and stages 1-3 (stride 16) at `width` base channels (64 = ResNet-18's), then two stride-2
    deconvolutions back to stride 4, each summed with a 1x1 projection of the backbone feature at its resolution
    (the SimpleBaseline head with U-Net skips: the skips carry the fine localisation the coarse stages lose), a 3x3
    conv and a 1x1 conv to one heatmap per keypoint. Stage 4 is left out: it would hold 75 % of ResNet-18's weights
    for a receptive field the 320x240 input does not need."""

    def __init__(self, num_keypoints: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1, self.layer2, self.layer3 = _stage(w, w, 1), _stage(w, 2 * w, 2), _stage(2 * w, 4 * w, 2)
        self.up1, self.up2 = _up(4 * w, 2 * w), _up(2 * w, w)
        self.skip1, self.skip2 = conv1x1(2 * w, 2 * w), conv1x1(w, w)
        self.head = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                  nn.Conv2d(w, num_keypoints, 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # residual branches start as identity (Goyal et al.): faster from scratch
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        out = self.head[-1]
        nn.init.normal_(out.weight, std=1e-3)
        nn.init.zeros_(out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.layer1(self.stem(x))
        f2 = self.layer2(f1)
        y = self.up1(self.layer3(f2)) + self.skip1(f2)
        y = self.up2(y) + self.skip2(f1)
        return self.head(y)


# ----------------------------------------------------------------------------------------------------- training
def heatmap_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((1.0 + FOREGROUND_WEIGHT * target) * (pred - target) ** 2).mean()


def learning_rate(base: float, step: int, progress: float, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to 1 % over `progress` in [0, 1]."""
    warm = min(1.0, (step + 1) / warmup_steps)
    return base * warm * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def predict_heatmaps(model: nn.Module, frames: kd.FrameSet, batch_size: int = 32) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(frames), batch_size):
            x = torch.from_numpy(kd.normalise(frames.images[start:start + batch_size]))
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    return np.concatenate(out)


def pixels_from_heatmaps(heatmaps: np.ndarray, frames: kd.FrameSet, smoothing_sigma: float) -> tuple:
    """(pixels (F, K, 2) in the original images, confidence (F, K)), decoded as the runtime does."""
    coords, confidence = decode_heatmaps(heatmaps, smoothing_sigma)
    points = heatmap_to_input(coords, kd.HEATMAP_STRIDE)
    return np.stack([box.to_original(p) for box, p in zip(frames.boxes, points)]), confidence


def reference_errors(pixels: np.ndarray, frames: kd.FrameSet) -> np.ndarray:
    """(F, K) keypoint errors scaled to a REFERENCE_WIDTH-wide image (NaN where the truth is not finite)."""
    widths = np.array([frames.specs[s].width for s in frames.shard], dtype=float)
    return np.linalg.norm(pixels - frames.keypoints_px, axis=-1) * (ka.REFERENCE_WIDTH / widths)[:, None]


def train(model: nn.Module, frames: kd.FrameSet, val: kd.FrameSet, args, log) -> tuple[nn.Module, dict]:
    """Train within the step and time budgets; returns the EMA weights with the lowest validation error."""
    torch.manual_seed(args.seed)
    model = model.to(memory_format=torch.channels_last)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay), use_buffers=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    epochs = math.ceil(args.steps * args.batch_size / len(frames)) + 1
    loader = torch.utils.data.DataLoader(
        kd.HeatmapDataset(frames, args.seed), batch_size=args.batch_size, drop_last=True,
        sampler=kd.EpochSampler(len(frames), args.seed, epochs), num_workers=args.loader_workers,
        persistent_workers=args.loader_workers > 0, worker_init_fn=single_threaded_worker)
    budget_s = 60.0 * args.time_budget_min
    start = time.monotonic()
    best = {'error': math.inf}
    history = []
    step, running = 0, []
    for images, targets, _ in loader:
        progress = max(step / args.steps, (time.monotonic() - start) / budget_s)
        if progress >= 1.0:
            break
        for group in optimiser.param_groups:
            group['lr'] = learning_rate(args.lr, step, progress, args.warmup_steps)
        model.train()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(images.contiguous(memory_format=torch.channels_last))
        loss = heatmap_loss(pred.float(), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        ema.update_parameters(model)
        running.append(loss.item())
        step += 1
        if step % args.eval_every == 0:
            best, record = _validate(ema.module, val, step, args.batch_size, start, running, best)
            history.append(record)
            running = []
            log(f"step {step} ({record['elapsed_s']:.0f} s, {record['samples_per_s']:.1f} samples/s): "
                f"loss {record['train_loss']:.5f}, val mean error {record['val_mean_px']:.2f} px "
                f"(best {best['error']:.2f} at step {best['step']})")
    if step % args.eval_every:
        best, record = _validate(ema.module, val, step, args.batch_size, start, running, best)
        history.append(record)
    samples = step * args.batch_size
    summary = {'steps': step, 'samples': samples, 'epochs': round(samples / len(frames), 2),
               'wall_time_s': round(time.monotonic() - start, 1), 'best_step': best['step'], 'history': history}
    model.load_state_dict(best['state'])
    return model.to(memory_format=torch.contiguous_format).eval(), summary


def single_threaded_worker(_: int) -> None:
    # OpenCV is made single-threaded in main(), before any use: a forked worker that touches OpenCV's thread pool
    # (cv2.setNumThreads) deadlocks on the pool's locks copied mid-use from the parent.
    torch.set_num_threads(1)


def _validate(model: nn.Module, val: kd.FrameSet, step: int, batch_size: int, start: float, losses: list,
              best: dict) -> tuple[dict, dict]:
    pixels, _ = pixels_from_heatmaps(predict_heatmaps(model, val), val, smoothing_sigma=1.0)
    error = float(np.mean(reference_errors(pixels, val)[val.visible]))
    elapsed = time.monotonic() - start
    record = {'step': step, 'elapsed_s': round(elapsed, 1), 'samples_per_s': round(step * batch_size / elapsed, 2),
              'train_loss': round(float(np.mean(losses)), 6) if losses else None, 'val_mean_px': round(error, 3)}
    if error < best['error']:
        best = {'error': error, 'step': step, 'state': copy.deepcopy(model.state_dict())}
    return best, record


# ----------------------------------------------------------------------------------------------------- export
def export_onnx(model: nn.Module, path: Path, sample: np.ndarray) -> float:
    """Export with a dynamic batch axis; returns the largest |onnxruntime - torch| on `sample` (checked <= 1e-4)."""
    import onnxruntime as ort

    model.eval()
    height, width = sample.shape[-2:]
    with torch.no_grad():
        batch_axis = {INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}}
        torch.onnx.export(model, (torch.zeros(1, 3, height, width),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=batch_axis, opset_version=ONNX_OPSET, dynamo=False)
        expected = model(torch.from_numpy(sample)).numpy()
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {INPUT_NAME: sample})[0]
    difference = float(np.abs(got - expected).max())
    if difference > 1e-4:
        raise RuntimeError(f'{path.name}: onnxruntime output differs from torch by {difference:.2e} (> 1e-4)')
    return difference


# ----------------------------------------------------------------------------------------------------- evaluation
def evaluate_detector(model_path: Path, root: Path, specs: list, threads: int) -> tuple[dict, dict]:
    """Accuracy of the shipped runtime (ONNX + manifest) on the full-resolution validation shards, and its latency,
    through robot.keypoint_accuracy (what `kp-pose eval robot_keypoints` reports on any dataset)."""
    detector = RobotKeypointDetector(model_path, providers='cpu', threads=threads)
    results = {spec.name.removeprefix('val_'): ka.detect_dataset(detector, root / spec.name) for spec in specs}
    pooled = {key: np.concatenate([r[key] for r in results.values()])
              for key in ('errors_ref', 'confidence', 'in_image', 'visible', 'latency_s')}
    pooled['keypoint_names'] = detector.keypoint_names
    summary = ka.summarise(pooled)
    per_camera = {}
    for spec, (name, r) in zip(specs, results.items()):
        occluded = r['in_image'] & ~r['visible']
        per_camera[name] = {'resolution': [spec.width, spec.height], 'hfov_deg': spec.hfov_deg,
                            'frames': len(r['errors_px']), 'visible': ka.error_stats(r['errors_px'][r['visible']]),
                            'in_image_occluded': ka.error_stats(r['errors_px'][occluded])}
    metrics = {
        'data': 'validation shards (own seeds, never trained on) at full resolution, '
                f'{kd.VALIDATION_DISTRACTORS} distractors, the training camera-placement ranges (truncation)',
        'keypoints_counted': 'visible (in the image and not occluded), errors in pixels',
        'all_cameras_at_640px_width': summary['visible_at_640px_width'],
        'per_camera': per_camera,
        'per_keypoint_at_640px_width': summary['per_keypoint_at_640px_width'],
        'per_frame': summary['per_frame'],
        'confidence': summary['confidence'],
    }
    latency = {}
    for r in results.values():
        latency.setdefault('{}x{}'.format(*r['image_size']), []).extend(r['latency_s'])
    latency_ms = {k: {'median_ms': round(1000 * float(np.median(v)), 1),
                      'p95_ms': round(1000 * float(np.percentile(v, 95)), 1)} for k, v in latency.items()}
    return metrics, latency_ms


def choose_smoothing(model: nn.Module, val: kd.FrameSet) -> tuple[float, dict]:
    """The DARK smoothing sigma with the lowest mean validation error (visible keypoints)."""
    heatmaps = predict_heatmaps(model, val)
    errors = {}
    for sigma in SMOOTHING_CANDIDATES:
        pixels, _ = pixels_from_heatmaps(heatmaps, val, sigma)
        errors[sigma] = round(float(np.mean(reference_errors(pixels, val)[val.visible])), 3)
    return min(errors, key=errors.get), errors


# ----------------------------------------------------------------------------------------------------- manifest
def manifest(args, names: tuple, smoothing: float, smoothing_errors: dict, train_specs: list, val_specs: list,
             record: dict, data_time_s: float, onnx_difference: float, metrics: dict, latency: dict) -> dict:
    width, height = kd.INPUT_SIZE
    hfovs = [s.hfov_deg for s in train_specs]
    return {
        'model': MODEL_NAME,
        'file': f'{MODEL_NAME}.onnx',
        'task': 'robot 2D keypoint heatmaps (RoboKeyGen §III-A.1 detection network, from RGB only: no segmentation '
                'mask or previous-frame positional prior)',
        'robot': 'Franka Emika Panda (pybullet_data franka_panda/panda.urdf)',
        'keypoint_names': list(names),
        'keypoints_are': 'origins of these links\' URDF frames',
        'input': {
            'name': INPUT_NAME, 'shape': ['batch', 3, height, width], 'layout': 'NCHW', 'dtype': 'float32',
            'colour': 'RGB',
            'letterbox': {'pad_value': kd.PAD_VALUE, 'interpolation': 'area (cv2.INTER_AREA)', 'centred': True,
                          'code': 'kp_pose_ros.core.letterbox'},
            'normalisation': {'mean': [round(v, 4) for v in kd.MEAN_RGB], 'std': [round(v, 4) for v in kd.STD_RGB],
                              'applied_to': 'pixel values 0-255: (x - mean) / std'},
        },
        'output': {
            'name': OUTPUT_NAME, 'shape': ['batch', len(names), height // kd.HEATMAP_STRIDE,
                                           width // kd.HEATMAP_STRIDE],
            'stride': kd.HEATMAP_STRIDE,
            'pixel_mapping': 'input_px = (heatmap_px + 0.5) * stride - 0.5 (pixel centres at integers)',
            'target': f'Gaussian, sigma {kd.HEATMAP_SIGMA} heatmap px, peak 1 for visible keypoints, '
                      f'{kd.OCCLUDED_PEAK} for keypoints in the image but hidden (by links, objects or pasted '
                      'occluders), all-zero map outside the image',
        },
        'decoding': {'method': 'argmax + DARK Newton step on the log of the smoothed map (core.heatmaps)',
                     'smoothing_sigma': smoothing, 'smoothing_sigma_val_mean_px': smoothing_errors,
                     'confidence': 'heatmap peak value; at the suggested threshold, '
                                   f'{ka.TARGET_RELIABILITY:.0%} of reported keypoints are within '
                                   f'{ka.CORRECT_PX:g} px '
                                   '(metrics.confidence)',
                     'suggested_confidence_threshold': metrics['confidence']['threshold']},
        'architecture': {
            'backbone': f'ResNet-18 stem + stages 1-3 (torchvision BasicBlock), base width {args.width} '
                        '(ResNet-18: 64), stage 4 dropped', 'head': 'two ConvTranspose2d 4x4 stride 2 (stride 16 -> 4) '
                        'with 1x1 skip projections from stages 2 and 1, 3x3 conv, 1x1 conv to heatmaps',
            'parameters': int(sum(p.numel() for p in KeypointHeatmapNet(len(names), args.width).parameters())),
            'onnx_opset': ONNX_OPSET, 'onnx_vs_torch_max_abs_diff': float(f'{onnx_difference:.3g}'),
        },
        'training': {
            'command': f'python -m kp_pose_ros.training.train_keypoints --out {args.out} --seed {args.seed} '
                       f'--renderer {args.renderer} --frames {args.frames} --time-budget-min {args.time_budget_min}',
            'seed': args.seed,
            'data': {
                'generator': 'kp_pose_ros.training.keypoint_data (sim.scene.SimScene via sim.dataset.write_dataset)',
                'renderer': {'pbr': 'sim.renderer (pyrender 0.1.45, OpenGL on Mesa EGL llvmpipe): metallic-roughness '
                                    'materials, 1-4 lights, filtered shadow maps, 4x MSAA',
                             'tiny': 'pybullet TinyRenderer (flat Phong, one light, aliased)'}[args.renderer],
                'frames': int(sum(s.frames for s in train_specs)), 'shards': len(train_specs),
                'resolutions': sorted({f'{s.width}x{s.height}' for s in train_specs}),
                'hfov_deg_range': list(kd.TRAIN_HFOV_RANGE_DEG), 'hfov_deg_drawn': [min(hfovs), max(hfovs)],
                'distractors_per_scene': [0, kd.MAX_DISTRACTORS], 'shadow_shards': sum(s.shadows for s in train_specs),
                'scene_ranges': {k: list(v) if isinstance(v, tuple) else v for k, v in kd.SCENE_RANGES.items()},
                'arm_poses': 'SimScene.sample_joint_positions (collision-free; working_pose_chance of them normal '
                             'around the ready pose, the rest uniform), new pose every frame',
                'backgrounds': 'new every frame: real photographs (sim.photos, half of the backdrops and floors, PBR '
                               'only) or sim.backgrounds procedural textures',
                'photos_installed': [f"{r['source']}: {r['key']} ({r['licence']})" for r in licence_records()]
                if args.renderer == 'pbr' else [],
                'validation': {s.name: {'resolution': [s.width, s.height], 'hfov_deg': s.hfov_deg,
                                        'frames': s.frames, 'seed': s.seed} for s in val_specs},
                'generation_wall_time_s': round(data_time_s, 1),
            },
            'augmentations': dict(kd.AUGMENTATIONS),
            'loss': f'foreground-weighted MSE, weight 1 + {FOREGROUND_WEIGHT} * target',
            'optimiser': f'AdamW lr {args.lr} weight decay {args.weight_decay}, {args.warmup_steps} warm-up steps, '
                         'cosine decay to 1 %; EMA of weights (decay '
                         f'{args.ema_decay}) evaluated and exported',
            'precision': 'bfloat16 autocast forward, float32 weights and export' if args.bf16 else 'float32',
            'batch_size': args.batch_size,
            'budget': {'max_steps': args.steps, 'max_wall_time_min': args.time_budget_min},
            'steps': record['steps'], 'samples_seen': record['samples'], 'epochs': record['epochs'],
            'wall_time_s': record['wall_time_s'], 'best_step': record['best_step'],
            'model_selection': 'lowest mean validation error of visible keypoints, evaluated every '
                               f'{args.eval_every} steps',
            'history': record['history'],
            'machine': f'CPU, 2 cores ({platform.processor() or platform.machine()}), torch threads {args.threads}, '
                       'shared with other jobs',
            'note': 'The paper trains its detection network far longer on a GPU, with a segmentation mask and a '
                    'positional prior as extra inputs; this one is trained from scratch in minutes on a CPU.',
        },
        'metrics': metrics,
        'latency_onnxruntime_cpu': {'threads': args.eval_threads, 'includes': 'letterbox, normalisation, network, '
                                    'decoding (RobotKeypointDetector.detect)', 'per_resolution': latency,
                                    'machine': 'CPU, 2 cores, shared with other jobs'},
    }


def write_manifest(path: Path, data: dict) -> None:
    with open(path.with_suffix('.yaml'), 'w', encoding='utf-8') as f:
        f.write('# Written by `python -m kp_pose_ros.training.train_keypoints`; see that module.\n')
        yaml.safe_dump(data, f, sort_keys=False, width=120, allow_unicode=True)


# ----------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, required=True, help='directory for the .onnx file and its manifest')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--data', type=Path, default=Path('build/keypoint_data'),
                        help='where rendered shards live (rendered if missing); seed-specific subdirectory')
    parser.add_argument('--frames', type=int, default=12800, help='training frames to render')
    parser.add_argument('--val-frames', type=int, default=150, help='validation frames per evaluation camera')
    parser.add_argument('--render-workers', type=int, default=2)
    parser.add_argument('--renderer', choices=kd.RENDERERS, default='pbr',
                        help="data engine renderer: 'pbr' (sim.renderer) or 'tiny' (pybullet TinyRenderer, old style)")
    # Compute, not capacity, limits accuracy here. Measured (same data, 6-minute runs): width 32 / batch 8 reached a
    # validation mean error of 20.4 px, width 48 / batch 16 26.5 px. Full runs: width 48 / batch 16, 4000 steps in
    # 27 minutes, 9.9 px (median 5.9); width 32 / batch 8, 15000 steps in 24 minutes, 8.4 px (median 5.0), both still
    # improving. More, smaller steps on a narrower network learn faster per CPU second.
    parser.add_argument('--width', type=int, default=32, help='base channel width (ResNet-18: 64)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--steps', type=int, default=15000)
    parser.add_argument('--time-budget-min', type=float, default=29.0)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--weight-decay', type=float, default=1e-4)
    parser.add_argument('--warmup-steps', type=int, default=200)
    parser.add_argument('--ema-decay', type=float, default=0.998)
    parser.add_argument('--eval-every', type=int, default=1000)
    parser.add_argument('--no-bf16', dest='bf16', action='store_false', help='train in float32')
    # Measured here: with 2 torch threads and the other core busy, OpenMP's barriers made each step 5-15x slower
    # than with 1 thread; augmentation runs in a loader process instead.
    parser.add_argument('--threads', type=int, default=1, help='torch threads for training')
    parser.add_argument('--loader-workers', type=int, default=1)
    parser.add_argument('--eval-threads', type=int, default=1, help='onnxruntime threads for the latency figures')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)  # see single_threaded_worker

    def log(message: str) -> None:
        print(f'[train_keypoints] {message}', flush=True)

    root = args.data / f'seed{args.seed}-{args.renderer}'
    train_specs = kd.training_shards(args.seed, args.frames, renderer=args.renderer)
    val_specs = kd.validation_shards(args.seed, args.val_frames, renderer=args.renderer)
    rendered = kd.render_shards(root, val_specs + train_specs, args.render_workers, log)
    data_time_s = kd.generation_time_s(root, val_specs + train_specs)
    log(f'rendered {rendered} shards' if rendered else f'using the shards under {root}')
    frames, val = kd.load_frames(root, train_specs), kd.load_frames(root, val_specs)
    log(f'{len(frames)} training frames, {len(val)} validation frames in memory')

    model = KeypointHeatmapNet(len(frames.keypoint_names), args.width)
    model, record = train(model, frames, val, args, log)
    smoothing, smoothing_errors = choose_smoothing(model, val)
    log(f'decoding smoothing sigma {smoothing} (val mean px by sigma: {smoothing_errors})')

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f'{MODEL_NAME}.onnx'
    difference = export_onnx(model, path, kd.normalise(val.images[:4]))
    log(f'exported {path} ({path.stat().st_size / 1e6:.1f} MB), onnxruntime vs torch max |diff| {difference:.2e}')
    # Decoding settings must be in the manifest before the runtime can load the model for evaluation.
    preliminary = {'confidence': {'threshold': math.nan}}
    data = manifest(args, frames.keypoint_names, smoothing, smoothing_errors, train_specs, val_specs, record,
                    data_time_s, difference, preliminary, {})
    write_manifest(path, data)
    metrics, latency = evaluate_detector(path, root, val_specs, args.eval_threads)
    data = manifest(args, frames.keypoint_names, smoothing, smoothing_errors, train_specs, val_specs, record,
                    data_time_s, difference, metrics, latency)
    write_manifest(path, data)
    log(f"validation (visible keypoints, 640 px width): {metrics['all_cameras_at_640px_width']}; latency {latency}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
