"""Per-part category keypoints (articulated.part_keypoints) on toy clouds: each loss term of PAGE's KP-Estimator
does what it says, learned keypoints stay apart, near the surface and see it more alike than FPS keypoints, the
baselines are what they claim, and the keypoints round-trip through the category model's YAML."""
import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from kp_pose_ros.articulated.categories import ArticulatedInstance, CategoryModel
from kp_pose_ros.articulated.part_keypoints import (
    KeypointConfig,
    add_keypoints,
    box_keypoints,
    coverage_loss,
    fps_keypoints,
    learn_keypoints,
    radius_spread,
    separation_loss,
    wasserstein_loss,
)
from kp_pose_ros.sim.procedural import articulated_instance
from kp_pose_ros.training import learn_part_keypoints

FAST = KeypointConfig(steps=100, points=256)


def box_surface(rng, lo, hi, n):
    """n points uniformly on the surface of the axis-aligned box [lo, hi]."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    extents = hi - lo
    areas = np.array([extents[1] * extents[2], extents[0] * extents[2], extents[0] * extents[1]])
    axis = rng.choice(3, n, p=areas / areas.sum())
    points = lo + rng.random((n, 3)) * extents
    points[np.arange(n), axis] = np.where(rng.random(n) < 0.5, lo[axis], hi[axis])
    return points


def normalised(points):
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (points - (lo + hi) / 2) / np.linalg.norm(hi - lo)


def l_shapes(count=6, seed=0):
    """Instances of an L-shaped part (two slabs at a right angle, arm lengths varying), normalised."""
    rng = np.random.default_rng(seed)
    clouds = []
    for _ in range(count):
        a, b = rng.uniform(0.9, 1.1, 2)
        clouds.append(normalised(np.vstack([box_surface(rng, [0, 0, 0], [a, 0.3, 0.2], 300),
                                            box_surface(rng, [0, 0, 0], [0.3, b, 0.2], 300)])))
    return clouds


def tensor(a):
    return torch.as_tensor(np.asarray(a, float))


def rotation_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@pytest.fixture(scope='module')
def learned():
    clouds = l_shapes()
    return clouds, learn_keypoints(clouds, FAST)


def test_wasserstein_zero_for_symmetric_keypoints_on_a_symmetric_cloud():
    rng = np.random.default_rng(1)
    angle, z = rng.uniform(0, 2 * np.pi, 200), rng.uniform(-0.3, 0.3, 200)
    cylinder = np.stack([0.2 * np.cos(angle), 0.2 * np.sin(angle), z], axis=1)
    turns = [rotation_z(2 * np.pi * m / 3) for m in range(3)]
    cloud = np.vstack([cylinder @ r.T for r in turns])  # exactly 3-fold symmetric about z
    keypoint = np.array([0.25, 0.05, 0.1])
    symmetric = np.stack([r @ keypoint for r in turns])
    assert float(wasserstein_loss(tensor(symmetric), tensor(cloud[None]))) == pytest.approx(0.0, abs=1e-9)
    moved = symmetric + [[0, 0, 0.1], [0, 0, 0], [0, 0, 0]]
    assert float(wasserstein_loss(tensor(moved), tensor(cloud[None]))) > 0.01
    assert radius_spread([cloud], symmetric)['wasserstein'] == pytest.approx(0.0, abs=1e-9)


def test_separation_grows_as_two_keypoints_approach():
    zeta = 0.5
    values = [float(separation_loss(tensor([[0, 0, 0], [d, 0, 0], [0, 2, 0]]), zeta))
              for d in (1.0, 0.6, 0.4, 0.2, 0.01)]
    assert values[0] == values[1] == 0.0  # beyond the threshold: no push
    assert all(a < b for a, b in zip(values[1:], values[2:]))
    close = tensor([[0, 0, 0], [1e-3, 0, 0], [0, 2, 0]]).requires_grad_()
    separation_loss(close, zeta).backward()
    assert close.grad[1, 0] < -1.0  # still pushed apart hard as they meet


def test_coverage_penalises_keypoints_off_the_cloud():
    cloud = tensor(box_surface(np.random.default_rng(2), [-0.3, -0.2, -0.1], [0.3, 0.2, 0.1], 2000)[None])
    on = np.array([[-0.3, -0.2, -0.1], [0.3, 0.2, -0.1], [0.3, -0.2, 0.1]])
    losses = [float(coverage_loss(tensor(on + [[0, 0, 0], [0, 0, 0], [0, 0, lift]]), cloud))
              for lift in (0, 0.2, 0.5)]
    assert losses[0] < losses[1] < losses[2]
    huddled = on * 0.1  # inside the box, far from its surface and far less spread than it
    assert float(coverage_loss(tensor(huddled), cloud)) > losses[0] + 0.2


def test_learning_lowers_the_wasserstein_loss_and_beats_fps(learned):
    clouds, keypoints = learned
    start = fps_keypoints(clouds)
    x = tensor(np.stack(clouds))
    assert float(wasserstein_loss(tensor(keypoints), x)) < 0.5 * float(wasserstein_loss(tensor(start), x))
    assert radius_spread(clouds, keypoints)['wasserstein'] < 0.5 * radius_spread(clouds, start)['wasserstein']


def test_learned_keypoints_stay_apart_and_near_the_surface(learned):
    clouds, keypoints = learned
    assert keypoints.shape == (3, 3)
    assert pdist(keypoints).min() > 0.9 * pdist(fps_keypoints(clouds)).min()  # no collapse: FPS spacing or more
    assert radius_spread(clouds, keypoints)['surface_distance'] < 0.1  # of a unit box diagonal


def test_learning_is_deterministic_per_seed():
    clouds = l_shapes(count=3)
    config = KeypointConfig(steps=20, points=128, seed=4)
    a = learn_keypoints(clouds, config)
    np.testing.assert_array_equal(a, learn_keypoints(clouds, config))
    assert not np.array_equal(a, learn_keypoints(clouds, KeypointConfig(steps=20, points=128, seed=5)))


def test_fps_starts_farthest_from_the_centroid_and_spreads():
    clouds = l_shapes(count=2)
    pooled = np.vstack(clouds)
    keypoints = fps_keypoints(clouds)
    np.testing.assert_array_equal(keypoints[0], pooled[np.argmax(np.linalg.norm(pooled - pooled.mean(0), axis=1))])
    assert all(np.any(np.all(pooled == k, axis=1)) for k in keypoints)
    assert pdist(keypoints).min() > 0.5


@pytest.mark.parametrize('extents', [(0.6, 0.4, 0.2), (0.5, 0.8, 0.0)])  # a box and a flat panel
def test_box_keypoints_are_spread_non_collinear_corners(extents):
    rng = np.random.default_rng(3)
    half = np.array(extents) / 2
    clouds = [box_surface(rng, -half * s, half * s, 500) for s in (0.9, 1.0, 1.1)]
    keypoints = box_keypoints(clouds)
    lo = np.mean([c.min(axis=0) for c in clouds], axis=0)
    hi = np.mean([c.max(axis=0) for c in clouds], axis=0)
    assert np.all(np.isclose(keypoints, lo) | np.isclose(keypoints, hi))  # corners of the mean box
    high = np.isclose(keypoints, hi)[:, hi - lo > 0]
    for i, j in ((0, 1), (0, 2), (1, 2)):  # no two on one edge (of a box; distinct corners of a panel)
        assert np.sum(high[i] != high[j]) >= min(2, high.shape[1] - 1)
    assert np.linalg.norm(np.cross(keypoints[1] - keypoints[0], keypoints[2] - keypoints[0])) > 0.05


def test_add_keypoints_round_trips_through_the_category_model(tmp_path):
    instances = [ArticulatedInstance(articulated_instance('laptop', seed, tmp_path).urdf, 'laptop',
                                     points_per_part=512) for seed in (11, 12)]
    model = CategoryModel.fit('laptop', instances)
    add_keypoints(model, instances, config=KeypointConfig(steps=10, points=128))
    model.save(tmp_path / 'laptop.yaml')
    loaded = CategoryModel.load(tmp_path / 'laptop.yaml')
    for method in ('learned', 'fps', 'box'):
        assert loaded.keypoints(method).shape == (len(model.parts), 3, 3)
        np.testing.assert_allclose(loaded.keypoints(method), model.keypoints(method), atol=1e-8)
    with pytest.raises(ValueError, match='unknown keypoint methods'):
        add_keypoints(model, instances, methods=('learned', 'nocs'))


def test_cli_writes_a_category_model(tmp_path, capsys):
    out = tmp_path / 'laptop.yaml'
    # --seed 34 draws train instances 62946 and 4028: development seeds, clear of those the benchmarks hold out.
    assert learn_part_keypoints.main(['--category', 'laptop', '--instances', '2', '--seed', '34', '--steps', '5',
                                      '--out', str(out), '--work', str(tmp_path / 'work')]) == 0
    model = CategoryModel.load(out)
    assert model.part_names == ('base', 'lid') and model.instances == ['laptop_0062946', 'laptop_0004028']
    assert model.keypoints('learned').shape == (2, 3, 3)
    printed = capsys.readouterr().out
    assert all(part in printed for part in model.part_names) and 'W1' in printed
