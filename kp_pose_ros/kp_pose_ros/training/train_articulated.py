"""Train and export the articulated voting network (PAGE): part segmentation and keypoint radii per point.

    python -m kp_pose_ros.training.train_articulated --data build/articulated/train \\
        --categories kp_pose_ros/models/articulated/laptop.yaml ... --out kp_pose_ros/models/articulated

packs samples from the procedural datasets (training.articulated_data), trains training.articulated_net.VotingNet
on them (every keypoint method's radii at once, so the keypoint ablation shares one backbone; --fusion concat trains
the plain-concatenation ablation), exports ONNX, checks onnxruntime against torch and writes the manifest
(<name>.yaml: categories and their model files, class and channel layout, input conventions, training record,
validation). Losses: cross-entropy on the part classes, L1 on the radii of the instance's category over its own
points, L1 on the directly regressed keypoints. Layouts are split: every VALIDATION_EVERY-th one is held out.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn import functional as F

from kp_pose_ros.articulated.categories import CategoryModel
from kp_pose_ros.articulated.observation import CROP_SIZE, NUM_POINTS
from kp_pose_ros.training import articulated_data as ad
from kp_pose_ros.training.articulated_net import VotingNet
from kp_pose_ros.training.train_keypoints import learning_rate

VALIDATION_EVERY = 8
INPUTS = ('points', 'crop', 'uv')
OUTPUTS = ('segmentation', 'radii', 'keypoints_direct')
ONNX_OPSET = 17


def channel_layout(models: list[CategoryModel]) -> list[int]:
    """First radius / keypoint channel of each category (each has 3 per part)."""
    out, first = [], 0
    for model in models:
        out.append(first)
        first += 3 * len(model.parts)
    return out


def batch_tensors(samples: ad.Samples, index: np.ndarray, points: int, rng: np.random.Generator | None):
    """Tensors of a batch; training draws `points` of each sample's points and jitters colour and points."""
    n = samples.points.shape[1]
    pick = (np.stack([rng.choice(n, points, replace=False) for _ in index]) if rng is not None
            else np.tile(np.arange(min(points, n)), (len(index), 1)))
    rows = index[:, None]
    pts = samples.points[rows, pick].astype(np.float32)
    crop = samples.crops[index].astype(np.float32) / 255.0
    if rng is not None:
        pts = pts + rng.normal(0, 0.01, pts.shape).astype(np.float32)
        gain = rng.uniform(0.7, 1.3, (len(index), 1, 1, 3)).astype(np.float32)
        crop = np.clip(crop * gain + rng.uniform(-0.1, 0.1, (len(index), 1, 1, 1)).astype(np.float32), 0, 1)
    return (torch.from_numpy(pts), torch.from_numpy(np.ascontiguousarray(crop.transpose(0, 3, 1, 2))),
            torch.from_numpy(samples.uv[rows, pick].astype(np.float32)),
            torch.from_numpy(samples.labels[rows, pick].astype(np.int64)),
            torch.from_numpy(samples.keypoints[index]), torch.from_numpy(samples.category[index]))


def losses(outputs, pts, labels, keypoints, category, first: list[int], sizes: list[int]):
    """(segmentation CE, radius L1, direct keypoint L1) over a batch."""
    seg, radii, direct = outputs
    ce = F.cross_entropy(seg.reshape(-1, seg.shape[-1]), labels.reshape(-1))
    total_k = direct.shape[1]
    radius_terms, direct_terms = [], []
    for b in range(pts.shape[0]):
        c = int(category[b])
        k0, k = first[c], sizes[c]
        fg = labels[b] > 0
        if fg.sum() == 0:
            continue
        kps = keypoints[b, :, :k]                              # (M, k, 3)
        target = torch.linalg.norm(pts[b, fg][None, :, None] - kps[:, None], dim=-1)   # (M, n, k)
        pred = radii[b, fg].view(-1, kps.shape[0], total_k)[:, :, k0:k0 + k].permute(1, 0, 2)
        radius_terms.append(F.l1_loss(pred, target))
        direct_terms.append(F.l1_loss(direct[b, k0:k0 + k], kps[0]))
    zero = seg.sum() * 0
    return (ce, torch.stack(radius_terms).mean() if radius_terms else zero,
            torch.stack(direct_terms).mean() if direct_terms else zero)


def evaluate(model, samples: ad.Samples, first, sizes, batch: int = 16) -> dict:
    """Held-out segmentation accuracy, radius and direct keypoint errors in millimetres (all points of a sample)."""
    model.eval()
    correct = total = 0
    radius_mm, direct_mm = [], []
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            index = np.arange(start, min(start + batch, len(samples)))
            pts, crop, uv, labels, kps, category = batch_tensors(samples, index, samples.points.shape[1], None)
            seg, radii, direct = model(pts, crop, uv)
            correct += int((seg.argmax(-1) == labels).sum())
            total += labels.numel()
            for b, i in enumerate(index):
                c, scale = int(category[b]), float(samples.scale[i])
                k0, k = first[c], sizes[c]
                fg = labels[b] > 0
                if not bool(fg.any()):
                    continue
                target = torch.linalg.norm(pts[b, fg][:, None] - kps[b, 0, :k][None], dim=-1)
                pred = radii[b, fg][:, k0:k0 + k]
                radius_mm.append(float((pred - target).abs().mean()) * scale * 1000)
                direct_mm.append(float(torch.linalg.norm(direct[b, k0:k0 + k] - kps[b, 0, :k], dim=-1).mean())
                                 * scale * 1000)
    model.train()
    return {'segmentation_accuracy': round(correct / max(total, 1), 4),
            'radius_mae_mm_learned': round(float(np.mean(radius_mm)), 2),
            'direct_keypoint_error_mm': round(float(np.mean(direct_mm)), 2)}


def export(model, path: Path, samples: ad.Samples) -> float:
    """ONNX with dynamic batch and point count; returns max |onnxruntime - torch| on held-out samples (<= 1e-3)."""
    import onnxruntime as ort

    model.eval()
    index = np.arange(min(2, len(samples)))
    pts, crop, uv = batch_tensors(samples, index, samples.points.shape[1], None)[:3]
    axes = {'points': {0: 'batch', 1: 'points'}, 'crop': {0: 'batch'}, 'uv': {0: 'batch', 1: 'points'},
            'segmentation': {0: 'batch', 1: 'points'}, 'radii': {0: 'batch', 1: 'points'},
            'keypoints_direct': {0: 'batch'}}
    with torch.no_grad():
        torch.onnx.export(model, (pts, crop, uv), str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
        expected = [t.numpy() for t in model(pts, crop, uv)]
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {'points': pts.numpy(), 'crop': crop.numpy(), 'uv': uv.numpy()})
    difference = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    if difference > 1e-3:
        raise RuntimeError(f'{path.name}: onnxruntime differs from torch by {difference:.2e}')
    return difference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, nargs='+', required=True, help='sim.procedural_writer datasets')
    parser.add_argument('--categories', type=Path, nargs='+', required=True, help='category model YAML files')
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--name', default='page_voting', help='files are <name>.onnx and <name>.yaml')
    parser.add_argument('--fusion', choices=('gc', 'concat'), default='gc')
    parser.add_argument('--samples', type=Path, default=None,
                        help='packed samples (.npz) to reuse or write; default build/articulated/<name>_samples.npz')
    parser.add_argument('--points', type=int, default=1024, help='points per sample in training')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--steps', type=int, default=20000)
    parser.add_argument('--time-budget-min', type=float, default=30.0)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--warmup-steps', type=int, default=200)
    parser.add_argument('--eval-every', type=int, default=500)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--init', type=Path, default=None, help='continue from these torch weights')
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(f'[train_articulated] {message}', flush=True)

    models = [CategoryModel.load(p) for p in args.categories]
    cache = args.samples or Path('build') / 'articulated' / f'{args.name}_samples.npz'
    if cache.is_file():
        samples = ad.Samples.load(cache)
        log(f'{len(samples)} samples from {cache}')
    else:
        samples = ad.pack(args.data, models, args.seed, NUM_POINTS, log)
        cache.parent.mkdir(parents=True, exist_ok=True)
        samples.save(cache)
    held = (samples.layout % VALIDATION_EVERY) == 0
    train, val = samples.subset(~held), samples.subset(held)
    log(f'{len(train)} training, {len(val)} validation samples')
    first, sizes = channel_layout(models), [3 * len(m.parts) for m in models]
    num_classes = 1 + sum(len(m.parts) for m in models)
    model = VotingNet(num_classes, sum(sizes), len(ad.METHODS), args.fusion)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location='cpu'))
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    start, history, best, best_state = time.monotonic(), [], None, None
    budget = args.time_budget_min * 60
    step = 0
    for step in range(args.steps):
        progress = max(step / args.steps, (time.monotonic() - start) / budget)
        if progress >= 1:
            break
        for group in optimiser.param_groups:
            group['lr'] = learning_rate(args.lr, step, progress, args.warmup_steps)
        index = rng.choice(len(train), args.batch_size, replace=False)
        pts, crop, uv, labels, kps, category = batch_tensors(train, index, args.points, rng)
        ce, radius, direct = losses(model(pts, crop, uv), pts, labels, kps, category, first, sizes)
        loss = ce + 10 * radius + 2 * direct
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.eval_every == 0 or progress >= 0.999:
            stats = evaluate(model, val, first, sizes)
            history.append({'step': step, 'minutes': round((time.monotonic() - start) / 60, 1),
                            'loss': round(loss.item(), 4), **stats})
            log(str(history[-1]))
            if best is None or stats['radius_mae_mm_learned'] < best['radius_mae_mm_learned']:
                best, best_state = stats, {k: v.clone() for k, v in model.state_dict().items()}
    final = evaluate(model, val, first, sizes)
    if best is None or final['radius_mae_mm_learned'] <= best['radius_mae_mm_learned']:
        best = final
    else:
        model.load_state_dict(best_state)
    weights = Path('build') / 'articulated' / f'{args.name}.pt'
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f'{args.name}.onnx'
    difference = export(model, path, val)
    manifest = {
        'model': args.name, 'file': path.name,
        'task': 'PAGE voting network: per-point part segmentation and radii to every part keypoint',
        'categories': [{'category': m.category, 'model_file': p.name, 'parts': list(m.part_names),
                        'first_class': f, 'first_channel': c}
                       for m, p, f, c in zip(models, args.categories, ad.network_classes(models), first)],
        'classes': num_classes, 'keypoint_channels': sum(sizes), 'methods': list(ad.METHODS),
        'fusion': args.fusion,
        'inputs': {'points': '(B, N, 3) float32: camera-frame points minus their mean, over their RMS radius',
                   'crop': f'(B, 3, {CROP_SIZE}, {CROP_SIZE}) float32 RGB in [0, 1]: '
                           'articulated.observation.observe',
                   'uv': '(B, N, 2) float32 point positions in the crop, [-1, 1] (grid_sample, align_corners=False)'},
        'outputs': {'segmentation': '(B, N, classes) logits; class 0 background',
                    'radii': '(B, N, methods * keypoint_channels) in the normalised units, method-major',
                    'keypoints_direct': '(B, keypoint_channels, 3) normalised, learned keypoints'},
        'num_points': NUM_POINTS,
        'training': {'data': [str(d) for d in args.data], 'samples': {'train': len(train), 'val': len(val)},
                     'validation': f'every {VALIDATION_EVERY}th layout, never trained on',
                     'steps': step, 'minutes': round((time.monotonic() - start) / 60, 1),
                     'optimiser': f'AdamW lr {args.lr} cosine, batch {args.batch_size}, {args.points} points',
                     'loss': 'CE + 10 x radius L1 + 2 x direct keypoint L1', 'seed': args.seed,
                     'where_trained': f'{platform.node()}: {platform.processor() or platform.machine()} CPU, '
                                      f'{torch.get_num_threads()} torch thread(s), no GPU; torch {torch.__version__}',
                     'command': 'python -m kp_pose_ros.training.train_articulated ' + ' '.join(sys.argv[1:]),
                     'initial_weights': str(args.init) if args.init else 'random (from scratch)',
                     'history': history, 'onnxruntime_vs_torch_max_abs_diff': difference},
        'validation': best,
    }
    with open(path.with_suffix('.yaml'), 'w', encoding='utf-8') as f:
        f.write('# Written by `python -m kp_pose_ros.training.train_articulated`; see that module.\n')
        yaml.safe_dump(manifest, f, sort_keys=False, width=120)
    log(f'wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {best}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
