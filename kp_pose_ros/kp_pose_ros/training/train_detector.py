"""Train, export and evaluate the rigid-object detector (objects.detector): ultralytics YOLOv10n from scratch on the
YOLO labels the data engine writes (`python -m kp_pose_ros.sim.bop_writer ... --yolo`).

    python -m kp_pose_ros.training.train_detector --data DIR --out kp_pose_ros/models/NAME.onnx --epochs N --imgsz S

No pretrained weights can be downloaded here, so the network starts from `yolov10n.yaml` (ultralytics offline, its
settings and runs under build/train_detector/NAME/, never in the source tree). Frames are split into training and
held-out validation by table layout (bop_writer renders `views_per_layout` views of each, which must not straddle the
split), deterministically for --seed; a derived data.yaml lists each split's images (linked under build/, so
ultralytics' label caches stay out of the data folder). The final epoch's weights are exported to ONNX with nms=False
(YOLOv10's one-to-one head needs none) at --imgsz, copied to --out, and validated on the held-out split by ultralytics'
val on that ONNX file (the pre-processing YoloV10Detector reproduces exactly); the split never chose a checkpoint, so
the metrics are unbiased. NAME.yaml beside the model records the data, settings, machine and those metrics.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from kp_pose_ros.objects.detector import INTERPOLATION, PAD_VALUE, YoloV10Detector

ARCHITECTURE = 'yolov10n.yaml'
COMMAND = 'python -m kp_pose_ros.training.train_detector'
VAL_CONF = 0.001  # ultralytics val's own default: mAP integrates over all scores above it
# Training-time augmentations and optimiser settings recorded in the manifest: ultralytics' defaults, all kept
# (optimizer=auto writes the optimiser and lr0 it picked back into them). Horizontal flips (fliplr) included: the
# detector only gives boxes; object chirality matters to the keypoint network, not here.
RECORDED_ARGS = ('optimizer', 'lr0', 'lrf', 'momentum', 'weight_decay', 'warmup_epochs', 'cos_lr', 'close_mosaic',
                 'mosaic', 'mixup', 'cutmix', 'copy_paste', 'hsv_h', 'hsv_s', 'hsv_v', 'degrees', 'translate',
                 'scale', 'shear', 'perspective', 'flipud', 'fliplr', 'erasing', 'deterministic', 'rect')


def layout_of(image: Path, meta: dict) -> int:
    """The table layout an image of bop_writer's yolo/ folder shows: its name is SCENE_IMAGE (BOP scene and image
    ids) and the writer starts a new layout every `views_per_layout` frames."""
    scene_id, im_id = (int(part) for part in image.stem.split('_'))
    return (scene_id * int(meta['frames_per_scene']) + im_id) // int(meta['views_per_layout'])


def split_images(images: list[Path], meta: dict, val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(training, validation) images: round(val_fraction * layouts) whole layouts, at least one, drawn with `seed`."""
    layouts = sorted({layout_of(image, meta) for image in images})
    if len(layouts) < 2:
        raise ValueError(f'{len(images)} images from {len(layouts)} table layout(s): need at least 2 layouts to hold '
                         'one out for validation')
    count = min(len(layouts) - 1, max(1, round(val_fraction * len(layouts))))
    held_out = {int(v) for v in np.random.default_rng(seed).permutation(layouts)[:count]}
    val = [image for image in images if layout_of(image, meta) in held_out]
    return [image for image in images if layout_of(image, meta) not in held_out], val


def write_split(work: Path, yolo_dir: Path, names: dict, train: list[Path], val: list[Path]) -> Path:
    """data.yaml for ultralytics under `work`, with explicit image lists; images and labels linked per split."""
    root = work / 'data'
    shutil.rmtree(root, ignore_errors=True)
    lists = {}
    for split, images in (('train', train), ('val', val)):
        for kind in ('images', 'labels'):
            (root / kind / split).mkdir(parents=True)
        for image in images:
            label = yolo_dir / 'labels' / f'{image.stem}.txt'
            (root / 'images' / split / image.name).symlink_to(image.resolve())
            (root / 'labels' / split / label.name).symlink_to(label.resolve())
        lists[split] = root / f'{split}.txt'
        lists[split].write_text(''.join(f'{root / "images" / split / image.name}\n' for image in images))
    data_yaml = root / 'data.yaml'
    with open(data_yaml, 'w', encoding='utf-8') as f:
        yaml.safe_dump({'path': str(root), 'train': str(lists['train']), 'val': str(lists['val']),
                        'nc': len(names), 'names': names}, f, sort_keys=False)
    return data_yaml


def count_instances(yolo_dir: Path, images: list[Path]) -> int:
    return sum(sum(1 for line in (yolo_dir / 'labels' / f'{image.stem}.txt').read_text().splitlines() if line.strip())
               for image in images)


def machine() -> dict:
    import torch
    import ultralytics

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                   if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {'hostname': socket.gethostname(), 'cpu': f'{cpu}, {os.cpu_count()} cores',
            'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none (trained on the CPU)',
            'python': platform.python_version(), 'torch': str(torch.__version__),
            'ultralytics': str(ultralytics.__version__)}


def history(results_csv: Path) -> list[dict]:
    """ultralytics' per-epoch results.csv as rows of rounded numbers."""
    with open(results_csv, newline='', encoding='utf-8') as f:
        return [{k.strip(): (int(float(v)) if k.strip() == 'epoch' else round(float(v), 5)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def manifest(args, argv: list[str], meta: dict, camera: dict, names: dict, split: dict, trainer_args: dict,
             parameters: int, record: dict, metrics: dict, onnx_path: Path) -> dict:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs, outputs = model.graph.input[0], model.graph.output[0]

    def dims(value) -> list:
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    return {
        'model': args.out.stem,
        'file': args.out.name,
        'task': 'object detection (2D boxes and classes), first stage of the rigid-object pipeline (issue 9): '
                'YOLOv10 boxes -> keypoint heatmaps on crops -> PnP',
        'runtime': 'kp_pose_ros.objects.detector.YoloV10Detector (reads input size, names and stride from the ONNX '
                   'metadata ultralytics writes)',
        'classes': {int(k): str(v) for k, v in names.items()},
        'obj_ids': list(meta['obj_ids']),
        'input': {'name': inputs.name, 'shape': dims(inputs), 'layout': 'NCHW',
                  'dtype': 'float32', 'colour': 'RGB',
                  'letterbox': {'pad_value': PAD_VALUE, 'interpolation': f'linear (cv2 flag {INTERPOLATION})',
                                'centred': True, 'code': 'kp_pose_ros.core.letterbox (as ultralytics LetterBox)'},
                  'normalisation': 'pixel values / 255'},
        'output': {'name': outputs.name, 'shape': dims(outputs),
                   'rows': 'x1, y1, x2, y2 (letterboxed input pixels, box edges), score, class id',
                   'nms': "none needed: YOLOv10's one-to-one head, exported with nms=False"},
        'architecture': {'config': f'{ARCHITECTURE} (ultralytics {record["machine"]["ultralytics"]})',
                         'pretrained': f'continued from {args.init}' if args.init else 'none: trained from scratch',
                         'parameters': parameters,
                         'onnx_opset': int(model.opset_import[0].version)},
        'training': {
            'command': f'{COMMAND} {shlex.join(argv)}',
            'seed': args.seed, 'epochs': record['epochs'], 'time_budget_min': args.time_budget_min or None,
            'imgsz': args.imgsz, 'batch': args.batch,
            'workers': args.workers,
            'data': {'folder': str(args.data), 'meta': meta, 'camera': camera, **split},
            'settings': {k: trainer_args[k] for k in RECORDED_ARGS if k in trainer_args},
            'mixed_precision': record['amp'],
            'exported_weights': 'the final epoch (last.pt, EMA weights)',
            'wall_time_s': record['wall_time_s'],
            'machine': record['machine'],
            'history': record['history'],
            # The earlier stage's record, where its manifest sits beside the --init weights (same name, .yaml).
            'continued_from': _earlier_stage(args.init),
        },
        'metrics': metrics,
    }


def _earlier_stage(init: Path | None) -> dict | None:
    manifest = init.with_suffix('.yaml') if init else None
    if manifest is None or not manifest.is_file():
        return None
    earlier = yaml.safe_load(manifest.read_text(encoding='utf-8'))
    return {'weights': str(init), 'training': earlier.get('training'), 'metrics': earlier.get('metrics')}


def write_manifest(onnx_path: Path, data: dict) -> Path:
    path = onnx_path.with_suffix('.yaml')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(f'# Written by `{COMMAND}`; see that module.\n')
        yaml.safe_dump(data, f, sort_keys=False, width=120, allow_unicode=True)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, required=True, help='bop_writer output folder written with --yolo')
    parser.add_argument('--out', type=Path, required=True, help='the .onnx file to write (manifest: same name .yaml)')
    parser.add_argument('--epochs', type=int, required=True)
    parser.add_argument('--time-budget-min', type=float, default=0.0,
                        help="wall-clock budget; ultralytics then fits the epochs (and the LR schedule) to it "
                             "(0: --epochs decides)")
    parser.add_argument('--imgsz', type=int, required=True, help='square network input side (a multiple of 32)')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--val-fraction', type=float, default=0.1, help='share of table layouts held out')
    parser.add_argument('--seed', type=int, default=0, help='split and training seed')
    parser.add_argument('--workers', type=int, default=2, help='data loader processes')
    parser.add_argument('--init', type=Path, default=None,
                        help="start from these ultralytics weights (e.g. an earlier run's last.pt, to continue a "
                             "CPU-budgeted training) instead of random ones")
    args = parser.parse_args(argv)
    if args.out.suffix != '.onnx':
        parser.error(f'--out must name a .onnx file, got {args.out}')
    if args.epochs < 1 or args.batch < 1 or args.workers < 0 or not 0 < args.val_fraction < 1:
        parser.error('--epochs and --batch must be >= 1, --workers >= 0, --val-fraction in (0, 1)')
    if args.imgsz < 32 or args.imgsz % 32:
        parser.error(f'--imgsz must be a positive multiple of 32 (the network stride), got {args.imgsz}')

    def log(message: str) -> None:
        print(f'[train_detector] {message}', flush=True)

    yolo_dir = args.data / 'yolo'
    meta = yaml.safe_load((args.data / 'meta.yaml').read_text(encoding='utf-8'))
    if not meta.get('yolo'):
        raise SystemExit(f'{args.data}: not a bop_writer dataset written with --yolo (meta.yaml: yolo='
                         f'{meta.get("yolo")})')
    if not meta.get('complete'):
        # The writer renames each frame into place whole, so a stopped render leaves complete frames only.
        log(f'{args.data} is incomplete (meta.yaml complete: false): training on the frames written so far')
    names = yaml.safe_load((yolo_dir / 'data.yaml').read_text(encoding='utf-8'))['names']
    camera = json.loads((args.data / 'camera.json').read_text(encoding='utf-8'))
    # A frame's label file is written after its image: an image without one is a frame cut short, not background.
    images = sorted(i for i in (yolo_dir / 'images').glob('*.png') if (yolo_dir / 'labels' / f'{i.stem}.txt').is_file())
    train, val = split_images(images, meta, args.val_fraction, args.seed)
    work = (Path('build') / 'train_detector' / args.out.stem).resolve()
    data_yaml = write_split(work, yolo_dir, names, train, val)
    split = {'images': len(images), 'train_images': len(train), 'val_images': len(val),
             'train_instances': count_instances(yolo_dir, train), 'val_instances': count_instances(yolo_dir, val),
             'split': f'by table layout (views_per_layout {meta["views_per_layout"]}): '
                      f'{len({layout_of(i, meta) for i in val})} of {len({layout_of(i, meta) for i in images})} '
                      f'layouts held out, drawn with numpy default_rng({args.seed})'}
    log(f'{len(train)} training and {len(val)} validation images; ultralytics works under {work}')

    # ultralytics reads these when first imported: offline (nothing to download), settings under build/.
    os.environ['YOLO_OFFLINE'] = '1'
    os.environ['YOLO_CONFIG_DIR'] = str(work / 'ultralytics_config')
    from ultralytics import YOLO

    common = dict(project=str(work / 'runs'), exist_ok=True, plots=False, workers=args.workers)
    model = YOLO(str(args.init) if args.init else ARCHITECTURE)
    started = time.perf_counter()
    model.train(data=str(data_yaml), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
                deterministic=True, pretrained=bool(args.init), name='train',
                **({'time': args.time_budget_min / 60.0} if args.time_budget_min > 0 else {}), **common)
    wall_time_s = time.perf_counter() - started
    trainer = model.trainer
    log(f'trained {trainer.epoch + 1} epochs in {wall_time_s:.0f} s')

    last = YOLO(str(trainer.last))
    parameters = int(sum(p.numel() for p in last.model.parameters()))
    exported = Path(last.export(format='onnx', nms=False, imgsz=args.imgsz))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exported, args.out)
    detector = YoloV10Detector(args.out, providers='cpu')  # what ships must load in the runtime
    log(f'exported {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), input {detector.input_size}, '
        f'{len(detector.names)} classes')

    results = YOLO(str(args.out), task='detect').val(data=str(data_yaml), split='val', imgsz=args.imgsz, batch=1,
                                                      conf=VAL_CONF, name='val', **common)
    box = results.box
    metrics = {'split': 'held-out validation layouts (never trained on, never used to choose a checkpoint)',
               'measured_with': "ultralytics val on the exported ONNX file (YoloV10Detector's pre-processing)",
               'images': len(val), 'instances': split['val_instances'],
               'mAP50': round(float(box.map50), 4), 'mAP50_95': round(float(box.map), 4),
               'precision': round(float(box.mp), 4), 'recall': round(float(box.mr), 4), 'conf_threshold': VAL_CONF}
    log(f'held-out val: mAP50 {metrics["mAP50"]}, mAP50-95 {metrics["mAP50_95"]}, precision '
        f'{metrics["precision"]}, recall {metrics["recall"]}')

    record = {'wall_time_s': round(wall_time_s, 1), 'epochs': trainer.epoch + 1, 'machine': machine(),
              'amp': bool(trainer.amp),
              'history': history(Path(trainer.save_dir) / 'results.csv')}
    path = write_manifest(args.out, manifest(args, argv, meta, camera, names, split, vars(trainer.args), parameters,
                                             record, metrics, args.out))
    log(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
