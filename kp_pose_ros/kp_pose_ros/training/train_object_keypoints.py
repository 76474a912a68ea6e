"""Train and export the object keypoint heatmap network (paper 004: ResNet-18 heatmaps on detection crops).

    python -m kp_pose_ros.training.train_object_keypoints --data build/objects/lmo_train \\
        --models ../shared/data/lmo/models --set lmo --out kp_pose_ros/models

reads the BOP folder the data engine rendered (sim.bop_writer), derives each object's 3D keypoints from its mesh
(objects.keypoints: surface farthest-point sampling, or --kind box for the 8 box corners and the centre), trains one
network for the whole object set on crops (training.object_keypoint_data), exports it to ONNX, checks onnxruntime
against torch, and writes beside it the model manifest (<set>_keypoints.yaml: preprocessing, crop, decoding, object
order, training record, validation error) and the 3D keypoints (<set>_keypoints_3d.yaml) the pose step uses.

Loss (paper §training): heatmap MSE (foreground-weighted, as train_keypoints) plus a reprojection-aware term, the L1
pixel distance between each keypoint's soft-argmax and its true position, which penalises maps whose mass is not at
the keypoint even where the MSE is small. --activation silu and the cosine schedule are the paper's training tricks
(the schedule is train_keypoints.learning_rate). Trained from scratch (no pretrained weights can be downloaded here)
within --steps or --time-budget-min, whichever comes first.
"""
from __future__ import annotations

import argparse
import copy
import math
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from kp_pose_ros.core.heatmaps import decode_heatmaps, heatmap_to_input
from kp_pose_ros.objects.keypoints import ObjectKeypoints
from kp_pose_ros.objects.models import load_bop_models
from kp_pose_ros.training import keypoint_data as kd
from kp_pose_ros.training import object_keypoint_data as od
from kp_pose_ros.training.train_keypoints import (
    KeypointHeatmapNet,
    export_onnx,
    heatmap_loss,
    learning_rate,
    single_threaded_worker,
)

INPUT_NAME, OUTPUT_NAME = 'image', 'heatmaps'
# Soft-argmax temperature on maps trained towards peak 1: exp(30) dwarfs the ~1000 background cells of a 32x32 map.
SOFTARGMAX_BETA = 30.0
SMOOTHING_CANDIDATES = (0.0, 0.5, 1.0)


def keypoints_per_object(keypoints: ObjectKeypoints) -> int:
    counts = {len(points) for points in keypoints.points.values()}
    if len(counts) != 1:
        raise ValueError(f'every object needs the same number of keypoints, got {sorted(counts)}')
    return counts.pop()


def with_activation(model: nn.Module, activation: str) -> nn.Module:
    """Swap every ReLU for SiLU (the paper's ablation); 'relu' leaves the network as built."""
    if activation == 'silu':
        for name, child in model.named_children():
            if isinstance(child, nn.ReLU):
                setattr(model, name, nn.SiLU(inplace=True))
            else:
                with_activation(child, activation)
    return model


def own_maps(pred: torch.Tensor, object_index: torch.Tensor, num_keypoints: int) -> torch.Tensor:
    """(B, K, H, W): each sample's own object's K maps out of the network's (B, objects * K, H, W)."""
    b, _, h, w = pred.shape
    return pred.view(b, -1, num_keypoints, h, w)[torch.arange(b), object_index]


def reprojection_loss(maps: torch.Tensor, points: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance (heatmap pixels) between soft-argmax and true keypoints, over keypoints inside the crop."""
    b, k, h, w = maps.shape
    weights = torch.softmax(SOFTARGMAX_BETA * maps.reshape(b, k, -1), dim=-1).view(b, k, h, w)
    xs = torch.arange(w, dtype=maps.dtype)
    ys = torch.arange(h, dtype=maps.dtype)
    x = (weights.sum(dim=2) * xs).sum(-1)
    y = (weights.sum(dim=3) * ys).sum(-1)
    error = (x - points[..., 0]).abs() + (y - points[..., 1]).abs()
    return (error * peaks).sum() / peaks.sum().clamp(min=1.0)


def predict(model: nn.Module, instances: od.InstanceSet, num_keypoints: int, batch_size: int = 64) -> np.ndarray:
    """(N, K, H, W) own-object heatmaps of the un-augmented validation crops."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(instances), batch_size):
            stop = min(start + batch_size, len(instances))
            images = np.stack([od.sample(instances, k, None)[0] for k in range(start, stop)])
            maps = model(torch.from_numpy(kd.normalise(images)))
            out.append(own_maps(maps, torch.from_numpy(instances.object_index[start:stop]), num_keypoints).numpy())
    return np.concatenate(out)


def validation_errors(heatmaps: np.ndarray, instances: od.InstanceSet, smoothing_sigma: float) -> np.ndarray:
    """Pixel errors (at the network input's scale) of keypoints inside the crop, decoded as the runtime does."""
    coords, _ = decode_heatmaps(heatmaps, smoothing_sigma)
    pixels = heatmap_to_input(coords, od.HEATMAP_STRIDE)
    M = od.nominal_affine()
    truth = instances.keypoints @ M[:, :2].T + M[:, 2]  # where sample(..., None) puts them, without the images
    inside = np.all((truth >= -0.5) & (truth <= od.INPUT_SIZE - 0.5), axis=-1)
    return np.linalg.norm(pixels - truth, axis=-1)[inside]


def train(model: nn.Module, frames: od.InstanceSet, val: od.InstanceSet, num_keypoints: int, args, log):
    """Train within the step and time budgets; returns the EMA weights with the lowest validation error."""
    torch.manual_seed(args.seed)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay), use_buffers=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    epochs = math.ceil(args.steps * args.batch_size / len(frames)) + 1
    loader = torch.utils.data.DataLoader(
        od.CropDataset(frames, args.seed), batch_size=args.batch_size, drop_last=True,
        sampler=kd.EpochSampler(len(frames), args.seed, epochs), num_workers=args.loader_workers,
        persistent_workers=args.loader_workers > 0, worker_init_fn=single_threaded_worker)
    budget_s = 60.0 * args.time_budget_min
    start = time.monotonic()
    best, history, step, running = {'error': math.inf}, [], 0, []
    for images, targets, peaks, points, object_index in loader:
        progress = max(step / args.steps, (time.monotonic() - start) / budget_s)
        if progress >= 1.0:
            break
        for group in optimiser.param_groups:
            group['lr'] = learning_rate(args.lr, step, progress if args.cosine else 0.0, args.warmup_steps)
        model.train()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(images)
        maps = own_maps(pred.float(), object_index, num_keypoints)
        loss = heatmap_loss(maps, targets)
        if args.reprojection_weight > 0 and progress > 0.2:
            loss = loss + args.reprojection_weight * reprojection_loss(maps, points, peaks)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        ema.update_parameters(model)
        running.append(loss.item())
        step += 1
        if step % args.eval_every == 0:
            best, record = _validate(ema.module, val, num_keypoints, step, args.batch_size, start, running, best)
            history.append(record)
            running = []
            log(f"step {step} ({record['elapsed_s']:.0f} s, {record['samples_per_s']:.1f} samples/s): loss "
                f"{record['train_loss']:.5f}, val mean {record['val_mean_px']:.2f} px (best {best['error']:.2f})")
    if step % args.eval_every:
        best, record = _validate(ema.module, val, num_keypoints, step, args.batch_size, start, running, best)
        history.append(record)
    summary = {'steps': step, 'samples': step * args.batch_size,
               'epochs': round(step * args.batch_size / len(frames), 2),
               'wall_time_s': round(time.monotonic() - start, 1), 'best_step': best['step'], 'history': history}
    model.load_state_dict(best['state'])
    return model.eval(), summary


def _validate(model, val, num_keypoints, step, batch_size, start, losses, best):
    error = float(np.mean(validation_errors(predict(model, val, num_keypoints), val, 1.0)))
    elapsed = time.monotonic() - start
    record = {'step': step, 'elapsed_s': round(elapsed, 1), 'samples_per_s': round(step * batch_size / elapsed, 2),
              'train_loss': round(float(np.mean(losses)), 6) if losses else None, 'val_mean_px': round(error, 3)}
    if error < best['error']:
        best = {'error': error, 'step': step, 'state': copy.deepcopy(model.state_dict())}
    return best, record


def error_stats(errors: np.ndarray) -> dict:
    return {'count': int(errors.size), 'mean_px': round(float(np.mean(errors)), 2),
            'median_px': round(float(np.median(errors)), 2), 'pck_5px': round(float(np.mean(errors < 5)), 3),
            'pck_10px': round(float(np.mean(errors < 10)), 3)}


def manifest(args, keypoints: ObjectKeypoints, names: dict, keypoints_file: str, data_meta: dict, record: dict,
             smoothing: float, smoothing_errors: dict, val_stats: dict, sizes: tuple, difference: float) -> dict:
    obj_ids = sorted(keypoints.points)
    return {
        'model': f'{args.set}_keypoints',
        'file': f'{args.set}_keypoints.onnx',
        'task': 'object 2D keypoint heatmaps on square detection crops (paper 004, ResNet-18 heatmap regressor, '
                'RGB); K maps per object, the detected object\'s own K are read',
        'objects': {'obj_ids': obj_ids, 'names': [names[i] for i in obj_ids], 'keypoints_file': keypoints_file,
                    'keypoint_kind': keypoints.kind, 'keypoints_per_object': int(keypoints_per_object(keypoints))},
        'input': {'name': INPUT_NAME, 'shape': ['batch', 3, od.INPUT_SIZE, od.INPUT_SIZE], 'layout': 'NCHW',
                  'dtype': 'float32', 'colour': 'RGB',
                  'crop': {'code': 'kp_pose_ros.objects.crops.square_crop', 'padding': od.CROP_PADDING,
                           'pad_value': kd.PAD_VALUE, 'interpolation': 'bilinear (cv2.INTER_LINEAR)'},
                  'normalisation': {'mean': [round(v, 3) for v in kd.MEAN_RGB],
                                    'std': [round(v, 3) for v in kd.STD_RGB],
                                    'applied_to': 'pixel values 0-255: (x - mean) / std'}},
        'output': {'name': OUTPUT_NAME, 'shape': ['batch', len(obj_ids) * keypoints_per_object(keypoints),
                                                  od.INPUT_SIZE // od.HEATMAP_STRIDE,
                                                  od.INPUT_SIZE // od.HEATMAP_STRIDE],
                   'stride': od.HEATMAP_STRIDE, 'channel_order': 'object-major: channel = object_index * K + k'},
        'decoding': {'smoothing_sigma': smoothing, 'code': 'kp_pose_ros.core.heatmaps.decode_heatmaps',
                     'val_mean_px_by_sigma': smoothing_errors},
        'network': {'architecture': 'training.train_keypoints.KeypointHeatmapNet (ResNet-18 stem and stages 1-3 '
                                    'with BasicBlocks, two deconvolutions with skips, stride 4)',
                    'width': args.width, 'activation': args.activation, 'parameters': sizes[0]},
        'training': {
            'data': {'folders': [str(d) for d in args.data], 'meta': data_meta,
                     'instances': {'train': sizes[1], 'val': sizes[2]},
                     'min_visib_fract': od.MIN_VISIB_FRACT, 'validation': f'every {od.VALIDATION_EVERY}th table '
                                                                           'layout, never trained on'},
            'models': {'folder': str(args.models), 'licence': args.models_licence},
            'targets': f'amodal Gaussians, sigma {od.HEATMAP_SIGMA} heatmap px, peak 1 for every keypoint inside '
                       'the crop',
            'loss': f'foreground-weighted heatmap MSE + {args.reprojection_weight} x soft-argmax L1 (after 20 % '
                    'of training)',
            'augmentations': od.AUGMENTATIONS,
            'optimiser': f'AdamW lr {args.lr}, weight decay {args.weight_decay}, batch {args.batch_size}, '
                         f'{"cosine" if args.cosine else "constant"} schedule after {args.warmup_steps} warm-up '
                         f'steps, EMA {args.ema_decay}, {"bf16 autocast" if args.bf16 else "float32"}',
            'seed': args.seed,
            'where_trained': f'{platform.node()}: {platform.processor() or platform.machine()} CPU, '
                             f'{torch.get_num_threads()} torch thread(s), no GPU; torch {torch.__version__}',
            'command': 'python -m kp_pose_ros.training.train_object_keypoints ' + ' '.join(sys.argv[1:]),
            'record': record,
            'onnxruntime_vs_torch_max_abs_diff': difference,
        },
        'validation': {'what': 'keypoints inside the crop of held-out rendered instances, crops from the true '
                               'visible box, pixels at the 128 px network input', **val_stats},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, nargs='+', required=True,
                        help='BOP folder(s) written by sim.bop_writer')
    parser.add_argument('--models', type=Path, required=True, help='the BOP model folder the data was rendered from')
    parser.add_argument('--models-licence', default='', help='licence of the model set, recorded in the manifest')
    parser.add_argument('--set', required=True, help='object set name: files are <set>_keypoints.{onnx,yaml}')
    parser.add_argument('--out', type=Path, required=True, help='directory for the model files')
    parser.add_argument('--kind', choices=('fps', 'box'), default='fps', help='keypoint set (paper: fps)')
    parser.add_argument('--keypoints', type=int, default=8, help='FPS keypoints per object')
    parser.add_argument('--max-frames', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--width', type=int, default=32, help='base channel width (ResNet-18: 64)')
    parser.add_argument('--activation', choices=('relu', 'silu'), default='silu')
    parser.add_argument('--no-cosine', dest='cosine', action='store_false', help='constant learning rate')
    parser.add_argument('--reprojection-weight', type=float, default=0.01)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=6000)
    parser.add_argument('--time-budget-min', type=float, default=30.0)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--weight-decay', type=float, default=1e-4)
    parser.add_argument('--warmup-steps', type=int, default=200)
    parser.add_argument('--ema-decay', type=float, default=0.998)
    parser.add_argument('--eval-every', type=int, default=500)
    parser.add_argument('--no-bf16', dest='bf16', action='store_false', help='train in float32')
    parser.add_argument('--init', type=Path, default=None,
                        help='start from these torch weights (the .pt an earlier run left under build/) to continue '
                             'a CPU-budgeted training')
    parser.add_argument('--threads', type=int, default=1, help='torch threads for training')
    parser.add_argument('--loader-workers', type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)  # see train_keypoints.single_threaded_worker

    def log(message: str) -> None:
        print(f'[train_object_keypoints] {message}', flush=True)

    models = load_bop_models(args.models)
    keypoints = ObjectKeypoints.for_models(models, args.kind, args.keypoints, args.seed)
    instances = od.concatenate([od.load_instances(root, keypoints, max_frames=args.max_frames, source=k)
                                for k, root in enumerate(args.data)])
    frames, val = od.split(instances)
    log(f'{len(frames)} training and {len(val)} validation instances of {len(keypoints.points)} objects')
    num_keypoints = keypoints_per_object(keypoints)
    model = with_activation(KeypointHeatmapNet(len(keypoints.points) * num_keypoints, args.width), args.activation)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location='cpu'))
    model, record = train(model, frames, val, num_keypoints, args, log)
    weights = Path('build') / 'train_object_keypoints' / f'{args.set}_keypoints.pt'
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)  # for --init: a later run continues from here
    record['initial_weights'] = str(args.init) if args.init else 'random (from scratch)'

    heatmaps = predict(model, val, num_keypoints)
    smoothing_errors = {s: round(float(np.mean(validation_errors(heatmaps, val, s))), 3)
                        for s in SMOOTHING_CANDIDATES}
    smoothing = min(smoothing_errors, key=smoothing_errors.get)
    val_stats = error_stats(validation_errors(heatmaps, val, smoothing))
    log(f'validation: {val_stats} (smoothing sigma {smoothing})')

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f'{args.set}_keypoints.onnx'
    sample_images = np.stack([od.sample(val, k, None)[0] for k in range(min(4, len(val)))])
    difference = export_onnx(model, path, kd.normalise(sample_images))
    keypoints_file = f'{args.set}_keypoints_3d.yaml'
    keypoints.save(args.out / keypoints_file)
    data_meta = {str(root): yaml.safe_load((root / 'meta.yaml').read_text(encoding='utf-8'))
                 for root in args.data if (root / 'meta.yaml').is_file()}
    names = {obj_id: model.name for obj_id, model in models.items()}
    sizes = (sum(p.numel() for p in model.parameters()), len(frames), len(val))
    data = manifest(args, keypoints, names, keypoints_file, data_meta, record, smoothing, smoothing_errors,
                    val_stats, sizes, difference)
    with open(path.with_suffix('.yaml'), 'w', encoding='utf-8') as f:
        f.write('# Written by `python -m kp_pose_ros.training.train_object_keypoints`; see that module.\n')
        yaml.safe_dump(data, f, sort_keys=False, width=120, allow_unicode=True)
    log(f'wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and its manifest')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
