"""Per-part category keypoints for PAGE (paper §4.1 KP-Estimator) and the FPS / box baselines of its ablation.

The pose network later regresses, for every visible point, its distance (radius) to each keypoint of its part, and
radius voting turns those into keypoint positions. A keypoint seen from points whose radii spread very differently
than another keypoint's biases the network towards one of them (paper §4.1, "minimum distribution difference"), so
the keypoints of a part are chosen so that their radius distributions over the part's surface are alike (L_wass),
they stay apart (L_sep) and they stay on the part and as spread as it is (L_cov), weighted 0.6 / 0.2 / 0.2.

Everything is in normalised part space (articulated.categories) and learned over the complete surfaces of many
training instances, so one keypoint set serves every instance of the category. torch is imported only inside the
learning and diagnostic functions: the runtime pipeline reads the keypoints from the CategoryModel YAML and never
needs it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist

from kp_pose_ros.articulated.categories import KEYPOINTS_PER_PART, ArticulatedInstance, CategoryModel
from kp_pose_ros.objects.keypoints import farthest_point_sampling

METHODS = ('learned', 'fps', 'box')
WEIGHTS = (0.6, 0.2, 0.2)  # paper Eq. 4: lambda_1 (L_wass), lambda_2 (L_sep), lambda_3 (L_cov)


@dataclass(frozen=True)
class KeypointConfig:
    """How learn_keypoints optimises (see there). zeta_factor: the separation threshold over the FPS keypoints'
    closest pair's distance."""

    steps: int = 300
    lr: float = 0.01
    points: int = 512          # each instance's cloud is subsampled to this many points (seeded)
    seed: int = 0
    zeta_factor: float = 1.1
    weights: tuple[float, float, float] = WEIGHTS


def fps_keypoints(clouds, count: int = KEYPOINTS_PER_PART) -> np.ndarray:
    """(count, 3) farthest-point samples of the pooled clouds, starting from the point farthest from the centroid
    (objects.keypoints.farthest_point_sampling, on the given surface instead of a sampled mesh)."""
    return farthest_point_sampling(np.vstack([np.asarray(c, float).reshape(-1, 3) for c in clouds]), count)


# Three corners of the box's inscribed regular tetrahedron (0 = low, 1 = high per axis): each pair differs in two
# coordinates, so no two share an edge and they stay non-collinear for any box with at most one flat side.
_BOX_CORNERS = ((0, 0, 0), (0, 1, 1), (1, 0, 1))


def box_keypoints(clouds) -> np.ndarray:
    """(3, 3) corners of the mean axis-aligned bounding box of the clouds (see _BOX_CORNERS)."""
    lo = np.mean([np.asarray(c, float).min(axis=0) for c in clouds], axis=0)
    hi = np.mean([np.asarray(c, float).max(axis=0) for c in clouds], axis=0)
    return np.array([np.where(np.array(corner) == 1, hi, lo) for corner in _BOX_CORNERS])


def radius_w1(keypoints, clouds):
    """(N, K, K) Wasserstein-1 distances between the radius distributions of every pair of keypoints (K, 3), per
    instance of clouds (N, P, 3), torch tensors. Both radius sets of an instance come from its P points, so their
    sorted values lie on one quantile grid and W1 is exactly the mean absolute difference of the sorted radii."""
    radii = _distances(clouds, keypoints).sort(dim=1).values  # (N, P, K)
    return (radii[:, :, :, None] - radii[:, :, None, :]).abs().mean(dim=1)


def surface_distance(keypoints, clouds):
    """(N, K) distance from each keypoint to its nearest point of each instance's cloud (torch tensors)."""
    return _distances(clouds, keypoints).min(dim=1).values


def wasserstein_loss(keypoints, clouds):
    """L_wass (Eq. 1): the sum over ordered keypoint pairs i != j of the W1 distance between their radius
    distributions, averaged over instances. The paper estimates it with a WGAN-GP critic (and its gradient penalty);
    radius distributions are 1-D, where the exact W1 is available in closed form (radius_w1), so neither is needed."""
    return radius_w1(keypoints, clouds).sum(dim=(1, 2)).mean()


def separation_loss(keypoints, zeta: float):
    """L_sep (Eq. 2), read as a threshold: the sum over ordered pairs i != j of exp(max(0, zeta - d_ij)) - 1.

    As printed, exp(zeta^2 - d_ij) compares a squared length with a length and never vanishes: it pushes every pair
    apart at any distance, against L_cov's pull onto the surface, so where the keypoints settle depends on the unit
    of length. The paper calls zeta a threshold and sets it just above the FPS spacing so that keypoints end a little
    off the surface; the hinge keeps that: pairs farther apart than zeta feel nothing, closer pairs are pushed apart
    exponentially harder, with a gradient that does not vanish as they meet (no collapse)."""
    import torch

    i, j = np.triu_indices(len(keypoints), k=1)
    d = ((keypoints[i] - keypoints[j]) ** 2).sum(dim=-1).clamp_min(1e-12).sqrt()
    return 2 * (torch.exp(torch.clamp(zeta - d, min=0.0)) - 1).sum()


def spread(points):
    """RMS distance to the centroid over the last-but-one axis: the 'volume' V of Eq. 3. Three keypoints span no
    volume, so the spread of keypoints and cloud is compared instead (equal for e.g. three points equally spaced on
    a great circle of a sphere and the sphere's surface)."""
    return ((points - points.mean(dim=-2, keepdim=True)) ** 2).sum(dim=-1).mean(dim=-1).sqrt()


def coverage_loss(keypoints, clouds):
    """L_cov (Eq. 3): |V(keypoints) - V(cloud)| + the sum over keypoints of the distance to the nearest cloud point,
    averaged over instances (V: spread)."""
    return (spread(keypoints) - spread(clouds)).abs().mean() + surface_distance(keypoints, clouds).sum(dim=1).mean()


def learn_keypoints(clouds, config: KeypointConfig = KeypointConfig()) -> np.ndarray:
    """(3, 3) keypoints of one category part, learned over its instances' complete normalised clouds (M_i, 3).

    The paper trains a GraphNet on the clouds, yet its output is "a unified set of keypoints applicable to all
    objects" of the category: one set per category part, which is what is optimised here directly, by Adam with a
    cosine-decayed rate for config.steps full-batch steps on the loss 0.6 L_wass + 0.2 L_sep + 0.2 L_cov over every
    instance. A network would only add an input-dependence that the result does not have. Starts from the FPS
    keypoints of the pooled clouds; zeta = config.zeta_factor x the closest FPS pair's distance (FPS places that
    pair about as far apart as three surface points can be, so keypoints must leave the surface slightly to clear
    zeta, as the paper intends). Deterministic for a config (its seed draws the per-instance subsamples).
    """
    import torch

    rng = np.random.default_rng(config.seed)
    subsampled = []
    for cloud in clouds:
        cloud = np.asarray(cloud, float)
        subsampled.append(cloud[rng.choice(len(cloud), config.points, replace=len(cloud) < config.points)])
    start = fps_keypoints(clouds)
    zeta = config.zeta_factor * pdist(start).min()
    x = torch.as_tensor(np.stack(subsampled), dtype=torch.float64)
    keypoints = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([keypoints], lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.steps)
    w_wass, w_sep, w_cov = config.weights
    for _ in range(config.steps):
        optimiser.zero_grad()
        loss = (w_wass * wasserstein_loss(keypoints, x) + w_sep * separation_loss(keypoints, zeta)
                + w_cov * coverage_loss(keypoints, x))
        loss.backward()
        optimiser.step()
        schedule.step()
    return keypoints.detach().numpy().copy()


def radius_spread(clouds, keypoints) -> dict[str, float]:
    """Diagnostics of a keypoint set (K, 3) over complete clouds (M_i, 3): 'wasserstein', the mean over instances and
    keypoint pairs of the W1 distance between radius distributions (0: every keypoint sees the surface alike), and
    'surface_distance', the mean distance of a keypoint to its nearest surface point."""
    import torch

    k = torch.as_tensor(np.asarray(keypoints, float))
    pairs = len(k) * (len(k) - 1)
    w1, near = [], []
    with torch.no_grad():
        for cloud in clouds:
            x = torch.as_tensor(np.asarray(cloud, float))[None]
            w1.append(float(radius_w1(k, x).sum()) / pairs)
            near.append(float(surface_distance(k, x).mean()))
    return {'wasserstein': float(np.mean(w1)), 'surface_distance': float(np.mean(near))}


def add_keypoints(model: CategoryModel, instances: list[ArticulatedInstance], methods=METHODS,
                  config: KeypointConfig = KeypointConfig()) -> None:
    """Fill keypoints[method] of every part of `model` from the complete normalised clouds of `instances` (training
    instances with the model's part list)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f'unknown keypoint methods {sorted(unknown)}; methods: {METHODS}')
    for inst in instances:
        if inst.part_names != model.part_names:
            raise ValueError(f'{inst.name} has parts {inst.part_names}, the {model.category!r} model has '
                             f'{model.part_names}')
    make = {'learned': lambda c: learn_keypoints(c, config), 'fps': fps_keypoints, 'box': box_keypoints}
    for k, part in enumerate(model.parts):
        clouds = [inst.parts[k].normalised() for inst in instances]
        for method in methods:
            part.keypoints[method] = make[method](clouds)


def _distances(clouds, keypoints):
    """(N, P, K) distances between cloud points (N, P, 3) and keypoints (K, 3); finite gradients where they meet."""
    return ((clouds[:, :, None, :] - keypoints[None, None]) ** 2).sum(dim=-1).clamp_min(1e-12).sqrt()
