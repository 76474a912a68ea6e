"""The articulated pipeline's input side: observations (points, crop, crop coordinates), depth regions above the
support plane, training samples packed from a rendered dataset, and a short training run whose exported network the
estimator loads and runs end to end."""
import json

import cv2
import numpy as np
import pytest

from kp_pose_ros.articulated.observation import MIN_POINTS, observe
from kp_pose_ros.articulated.segmentation import find_regions
from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.robot.depth_alignment import depth_view

CAMERA = CameraModel.pinhole(320, 240, 300.0, 300.0, 159.5, 119.5)


def _points_image(depth: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[:depth.shape[0], :depth.shape[1]]
    return np.stack([(u - CAMERA.cx) / CAMERA.fx * depth, (v - CAMERA.cy) / CAMERA.fy * depth, depth], axis=-1)


def test_observation_samples_the_masked_points_and_maps_them_into_the_crop():
    depth = np.full((240, 320), 1.0)
    points_image = _points_image(depth)
    points_image[100:110, 150:160] = np.nan  # a hole inside the mask is skipped
    mask = np.zeros((240, 320), bool)
    mask[80:160, 120:220] = True
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[..., 0] = np.arange(320) // 2  # a smooth ramp: bilinear sampling at a pixel gives that pixel's value
    rgb[..., 1] = np.arange(240)[:, None] // 2
    obs = observe(rgb, points_image, mask, np.random.default_rng(0), num_points=500, crop_size=64)
    assert obs.points.shape == (500, 3) and len(np.unique(obs.source)) == 500
    assert np.all(mask.reshape(-1)[obs.source]) and np.all(np.isfinite(obs.points))
    np.testing.assert_allclose(obs.points, points_image.reshape(-1, 3)[obs.source])
    np.testing.assert_allclose(obs.normalised.mean(axis=0), 0, atol=1e-5)
    assert np.sqrt(np.mean(np.sum(obs.normalised ** 2, axis=1))) == pytest.approx(1.0, rel=1e-4)
    assert obs.box == (120.0, 80.0, 220.0, 160.0)
    # uv in [-1, 1] (grid_sample, align_corners=False) sample the crop where the point's pixel went.
    crop_px = (obs.uv.astype(float) + 1) / 2 * 64 - 0.5
    sampled = cv2.remap(obs.crop, crop_px[:, 0].astype(np.float32).reshape(1, -1),
                        crop_px[:, 1].astype(np.float32).reshape(1, -1), cv2.INTER_LINEAR)[0]
    expected = rgb.reshape(-1, 3)[obs.source]
    assert np.abs(sampled[:, :2].astype(int) - expected[:, :2].astype(int)).max() <= 2
    again = observe(rgb, points_image, mask, np.random.default_rng(0), num_points=500, crop_size=64)
    np.testing.assert_array_equal(again.source, obs.source)


def test_observation_repeats_points_when_few_and_refuses_too_few():
    points_image = _points_image(np.full((240, 320), 1.0))
    rgb = np.zeros((240, 320, 3), np.uint8)
    mask = np.zeros((240, 320), bool)
    mask[10:20, 10:20] = True  # 100 pixels
    obs = observe(rgb, points_image, mask, np.random.default_rng(1), num_points=256)
    assert len(obs.points) == 256 and len(np.unique(obs.source)) == 100
    small = np.zeros_like(mask)
    small.reshape(-1)[:MIN_POINTS - 1] = True
    assert observe(rgb, points_image, small, np.random.default_rng(1)) is None


def test_regions_are_what_stands_on_the_support_plane():
    # A floor 1.2 m below a camera looking down 40 deg, and two boxes standing on it, by ray casting.
    tilt = np.radians(40)
    R = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    up = R @ np.array([0.0, -1.0, 0.0])   # floor normal in the camera frame (towards the camera)
    origin = -1.2 * up                     # a floor point below the camera
    v, u = np.mgrid[:240, :320]
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy, np.ones_like(u, float)], axis=-1)
    depth = (origin @ up) / (rays @ up)
    x_axis = R @ np.array([1.0, 0.0, 0.0])
    forward = np.cross(up, x_axis)
    truth = []
    for centre_x, centre_f in ((-0.35, 1.5), (0.3, 1.3)):
        centre = origin + centre_x * x_axis + centre_f * forward
        top = (centre + 0.25 * up) @ up / (rays @ up)  # the box top, 0.25 m above the floor
        top_points = rays * top[..., None] - centre
        on_top = (np.abs(top_points @ x_axis) < 0.12) & (np.abs(top_points @ forward) < 0.12)
        depth = np.where(on_top, np.minimum(depth, top), depth)
        truth.append(on_top)
    floor_depth = (origin @ up) / (rays @ up)
    view = depth_view(depth, CAMERA)
    regions = find_regions(view, np.random.default_rng(0))
    assert regions.T_cam_plane is not None and abs(regions.T_cam_plane[:3, 2] @ up) > 0.99
    assert len(regions.masks) == 2, regions.reason
    for mask in truth:
        overlap = max(np.sum(mask & r) / np.sum(mask) for r in regions.masks)
        assert overlap > 0.6  # depth edges (flying pixels) and the opening take the border
    for r in regions.masks:
        assert np.mean(depth[r] < floor_depth[r] - 0.01) > 0.95  # nothing of the floor
    assert find_regions(depth_view(np.full((240, 320), np.nan), CAMERA), np.random.default_rng(0)).reason


torch = pytest.importorskip('torch', reason='training needs torch (main stack only)')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 4-frame laptop dataset, the laptop category model (3 instances, few steps), packed samples and a network
    trained for a few steps."""
    from kp_pose_ros.sim.procedural_writer import config_for, write_procedural
    from kp_pose_ros.training import learn_part_keypoints, train_articulated

    root = tmp_path_factory.mktemp('articulated')
    config = config_for('articulated', ['laptop'], camera=CAMERA, articulated_per_layout=(1, 2),
                        distance_range_m=(0.6, 1.0))
    write_procedural(root / 'data', 4, 'articulated', config, seed=4321, views_per_layout=2)
    models = root / 'models'
    assert learn_part_keypoints.main(['--category', 'laptop', '--instances', '3', '--steps', '20', '--seed', '43',
                                      '--out', str(models / 'laptop.yaml'), '--work', str(root / 'work')]) == 0
    assert train_articulated.main(['--data', str(root / 'data'), '--categories', str(models / 'laptop.yaml'),
                                   '--out', str(models), '--samples', str(root / 'samples.npz'), '--steps', '3',
                                   '--eval-every', '2', '--points', '256', '--batch-size', '2', '--threads', '1']) == 0
    return root


def test_packed_samples_hold_the_true_keypoints_and_part_labels(trained):
    from kp_pose_ros.articulated.categories import ArticulatedInstance, CategoryModel
    from kp_pose_ros.training.articulated_data import METHODS, Samples

    samples = Samples.load(trained / 'samples.npz')
    model = CategoryModel.load(trained / 'models' / 'laptop.yaml')
    assert len(samples) >= 2 and samples.points.shape[1:] == (2048, 3)
    assert set(np.unique(samples.labels)) <= {0, 1, 2} and (samples.labels > 0).mean() > 0.3
    frames = [json.loads(line) for line in (trained / 'data' / 'annotations.jsonl').read_text().splitlines()]
    # Sample 0 is the first usable instance of the first frame that has one: its keypoints un-normalised are the
    # category keypoints placed on that instance by its true part poses.
    inst = next(i for f in frames for i in f['instances'] if i['visible_px'] >= 300)
    art = ArticulatedInstance(trained / 'data' / inst['asset'], 'laptop')
    T = np.array([p['T_cam_part'] for p in sorted(inst['parts'], key=lambda p: p['part_id'])])
    for m, method in enumerate(METHODS):
        local = art.keypoints(model.keypoints(method))
        cam = (np.einsum('pij,pkj->pki', T[:, :3, :3], local) + T[:, None, :3, 3]).reshape(-1, 3)
        normalised = samples.keypoints[0, m, :6]
        centre = cam.mean(axis=0) - normalised.mean(axis=0) * samples.scale[0]
        np.testing.assert_allclose(normalised * samples.scale[0] + centre, cam, atol=1e-4)


def test_the_exported_network_runs_in_the_estimator(trained):
    from kp_pose_ros.articulated.estimator import ArticulatedEstimatorConfig, load_estimator

    estimator = load_estimator(trained / 'models' / 'page_voting.onnx', ArticulatedEstimatorConfig(), 'cpu')
    assert estimator.categories == ('laptop',) and estimator.network.methods == ('learned', 'fps', 'box')
    frame = json.loads((trained / 'data' / 'annotations.jsonl').read_text().splitlines()[0])
    rgb = cv2.cvtColor(cv2.imread(str(trained / 'data' / frame['rgb'])), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(str(trained / 'data' / frame['depth']), cv2.IMREAD_UNCHANGED) / 1000.0
    instance = cv2.imread(str(trained / 'data' / frame['instance_mask']), cv2.IMREAD_UNCHANGED)
    masks = [instance == i['mask_value'] for i in frame['instances']]
    result = estimator.estimate(rgb, np.where(depth > 0, depth, np.nan), CAMERA, regions=masks, stamp_s=1.0)
    assert set(result.timings_s) == {'depth', 'segmentation', 'network', 'voting', 'fit'}
    for obj in result.objects:  # a 3-step network may find nothing; what it finds is well formed
        assert obj.category == 'laptop' and obj.T_cam_box.shape == (2, 4, 4) and obj.joint_values.shape == (1,)
        assert obj.instance_id >= 0
