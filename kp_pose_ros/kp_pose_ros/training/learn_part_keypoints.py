"""Fit an articulated category's model and its per-part keypoints (PAGE §4.1) on procedural training instances.

    python -m kp_pose_ros.training.learn_part_keypoints --category laptop --instances 40 \\
        --out kp_pose_ros/models/articulated/laptop.yaml

writes TRAIN-split instances (seeds drawn with numpy default_rng(--seed); never test seeds) under --work, fits the
CategoryModel (articulated.categories) on them, adds the learned, FPS and box keypoints of every part
(articulated.part_keypoints), saves the model YAML and prints, per part and method, the radius-distribution spread
(mean pairwise W1, lower: every keypoint sees the part alike), the mean keypoint-to-surface distance and the closest
keypoint pair, all in normalised part space. A category model needs one part list; where a category's instances
differ in structure (a cabinet's 1-3 doors or drawers), seeds are drawn until --instances share the commonest one.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.spatial.distance import pdist

from kp_pose_ros.articulated.categories import ArticulatedInstance, CategoryModel
from kp_pose_ros.articulated.part_keypoints import METHODS, KeypointConfig, add_keypoints, radius_spread
from kp_pose_ros.sim.procedural import ARTICULATED_CATEGORIES, articulated_instance, draw_seeds

MAX_DRAWS_PER_INSTANCE = 50


def structure(instance: ArticulatedInstance) -> tuple:
    """What CategoryModel.fit needs the instances to share: part and joint names, in order."""
    return instance.part_names, tuple(j.name for j in instance.joints)


def training_instances(category: str, count: int, seed: int, folder: Path, log=print) -> list[ArticulatedInstance]:
    """`count` distinct TRAIN instances of the category's commonest structure, written under `folder`; deterministic
    for (category, count, seed)."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[ArticulatedInstance]] = {}
    seen: set[int] = set()
    while max(map(len, groups.values()), default=0) < count:
        if len(seen) >= MAX_DRAWS_PER_INSTANCE * count:
            raise RuntimeError(f'{len(seen)} {category} instances drawn, none of their structures {count} times')
        for s in draw_seeds(rng, 'train', count):
            if s not in seen:
                seen.add(s)
                instance = ArticulatedInstance(articulated_instance(category, s, folder).urdf, category)
                groups.setdefault(structure(instance), []).append(instance)
    chosen = max(groups.values(), key=len)  # the first drawn of the commonest structures
    others = {key[0]: len(v) for key, v in groups.items() if v is not chosen}
    log(f'{len(seen)} train instances drawn, {count} used with parts {chosen[0].part_names}'
        + (f'; left out other structures {others}' if others else ''))
    return chosen[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--category', choices=ARTICULATED_CATEGORIES, required=True)
    parser.add_argument('--instances', type=int, default=40, help='training instances to fit on')
    parser.add_argument('--out', type=Path, required=True, help='the category model .yaml to write')
    parser.add_argument('--seed', type=int, default=0, help='instance draw and point subsampling seed')
    parser.add_argument('--steps', type=int, default=KeypointConfig.steps, help='keypoint optimisation steps per part')
    parser.add_argument('--work', type=Path, default=Path('build/learn_part_keypoints'),
                        help='where the instances are written (under a folder per category)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    args = parser.parse_args(argv)
    if args.instances < 1 or args.steps < 1:
        parser.error('--instances and --steps must be >= 1')
    if args.out.suffix != '.yaml':
        parser.error(f'--out must name a .yaml file, got {args.out}')
    import torch

    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(f'[learn_part_keypoints] {message}', flush=True)

    instances = training_instances(args.category, args.instances, args.seed, args.work / args.category, log)
    model = CategoryModel.fit(args.category, instances)
    add_keypoints(model, instances, METHODS, replace(KeypointConfig(), steps=args.steps, seed=args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    log(f'wrote {args.out}')
    log('per part and method, normalised units: W1 = mean pairwise radius-distribution distance, '
        'surface = mean keypoint-to-surface distance, gap = closest keypoint pair')
    for k, part in enumerate(model.parts):
        clouds = [inst.parts[k].normalised() for inst in instances]
        for method in METHODS:
            keypoints = part.keypoints[method]
            d = radius_spread(clouds, keypoints)
            log(f'  {part.name:12s} {method:8s} W1 {d["wasserstein"]:.4f}  surface {d["surface_distance"]:.4f}  '
                f'gap {pdist(keypoints).min():.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
