"""Procedural category and articulated instances, their scenes and written data agree with what pybullet and the
renderer hold: URDFs that load with their limits, canonical NOCS frames and sizes, joint states, part poses that
project onto the part masks, instances at rest on the table, determinism per seed."""
import json
from pathlib import Path

import cv2
import numpy as np
import pybullet
import pytest
import trimesh
import yaml
from pybullet_utils import bullet_client

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.sim.procedural import (
    ARTICULATED_CATEGORIES,
    ARTICULATED_PARTS,
    CATEGORIES,
    TEST_SEEDS,
    TRAIN_SEEDS,
    articulated_instance,
    category_instance,
    draw_seeds,
    split_of,
)
from kp_pose_ros.sim.procedural_scene import ProceduralScene, ProceduralSceneConfig, _box_corners, _boxes_penetrate
from kp_pose_ros.sim.procedural_writer import config_for, write_procedural
from kp_pose_ros.sim.pybullet_mirror import link_frame

SMALL_CAMERA = CameraModel.pinhole(320, 240, 300.0, 300.0, 159.5, 119.5)


def full_aabb(c, body):
    boxes = [c.getAABB(body, link) for link in range(-1, c.getNumJoints(body))]
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def bounds(c, body, links):
    """Exact world bounds of the collision boxes of `links` (pybullet's AABBs are padded)."""
    link, corners = _box_corners(c, body)
    points = corners[np.isin(link, links)].reshape(-1, 3)
    return points.min(axis=0), points.max(axis=0)


def part_names(c, body):
    links = [c.getJointInfo(body, j)[12].decode() for j in range(c.getNumJoints(body))]
    return (c.getBodyInfo(body)[0].decode(), *links)


def interpenetrating(c, body, moving_only=False):
    links, corners = _box_corners(c, body)
    keep = links >= 0 if moving_only else links >= -1
    return _boxes_penetrate(links[keep], corners[keep], 5e-4)


# Upper joint limits (rad, or m for drawers) each category draws from.
UPPER_LIMITS = {'cabinet': (0.17, 2.0), 'laptop': (1.9, 2.3), 'drawer': (0.17, 0.55), 'eyeglasses': (1.5, 1.7),
                'scissors': (0.6, 0.9)}


@pytest.mark.parametrize('category', ARTICULATED_CATEGORIES)
def test_urdfs_load_with_their_limits_and_closed_bbox(category, tmp_path):
    c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    try:
        for seed in range(4):
            asset = articulated_instance(category, seed, tmp_path)
            body = c.loadURDF(str(asset.urdf.resolve()), useFixedBase=True)
            joints = [c.getJointInfo(body, j) for j in range(c.getNumJoints(body))]
            assert joints and all(j[2] in (pybullet.JOINT_REVOLUTE, pybullet.JOINT_PRISMATIC) for j in joints)
            for j in joints:  # closed at the lower limit, metres or radians
                assert j[8] == 0.0 and UPPER_LIMITS[category][0] <= j[9] <= UPPER_LIMITS[category][1]
                assert j[1].decode() == j[12].decode() + '_joint'
            if category in ARTICULATED_PARTS:  # a fixed part list, in URDF and pybullet link order
                assert part_names(c, body) == ARTICULATED_PARTS[category]
            lo, hi = full_aabb(c, body)  # all joints at 0: closed; pybullet pads AABBs by ~1 mm
            assert np.allclose((lo + hi) / 2, 0.0, atol=2e-3)
            assert np.allclose(hi - lo, asset.size_m, atol=4e-3)
            assert not interpenetrating(c, body)
            if category in ('cabinet', 'laptop'):
                for j in joints:  # open fully: the parts move out, towards +x (the front)
                    c.resetJointState(body, j[0], j[9])
                assert full_aabb(c, body)[1][0] > hi[0] + 0.05 or category == 'laptop'
                assert full_aabb(c, body)[1][2] > hi[2] + 0.05 or category == 'cabinet'
            c.removeBody(body)
    finally:
        c.disconnect()


def test_drawers_stack_and_slide_out_towards_the_front(tmp_path):
    c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    try:
        for seed in (5, 6, 1_000_005):
            asset = articulated_instance('drawer', seed, tmp_path)
            body = c.loadURDF(str(asset.urdf.resolve()), useFixedBase=True)
            # carcass depth 0.35-0.6 m plus a front and handle, width 0.4-0.9 m, height 0.45-1 m
            depth, width, height = asset.size_m
            assert 0.385 <= depth <= 0.645 and 0.4 <= width <= 0.9 and 0.45 <= height <= 1.0
            closed = [link_frame(c, body, j) for j in range(3)]
            assert closed[0][2, 3] < closed[1][2, 3] < closed[2][2, 3]  # drawer_0 at the bottom
            for j in range(3):
                assert np.allclose(c.getJointInfo(body, j)[13], (1.0, 0.0, 0.0))
                front = bounds(c, body, [j])[1][0]
                upper = c.getJointInfo(body, j)[9]
                c.resetJointState(body, j, upper)
                assert np.allclose(link_frame(c, body, j)[:3, 3] - closed[j][:3, 3], (upper, 0.0, 0.0), atol=1e-9)
                assert bounds(c, body, [j])[1][0] == pytest.approx(front + upper, abs=1e-6)
                assert not interpenetrating(c, body)
                c.resetJointState(body, j, 0.0)
            c.removeBody(body)
    finally:
        c.disconnect()


def test_eyeglasses_temples_fold_behind_the_front_and_open_backwards(tmp_path):
    c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    try:
        met = 0
        for seed in range(6):
            asset = articulated_instance('eyeglasses', seed, tmp_path)
            body = c.loadURDF(str(asset.urdf.resolve()), useFixedBase=True)
            frame_lo, frame_hi = bounds(c, body, [-1])
            assert 0.12 <= frame_hi[1] - frame_lo[1] <= 0.15 and asset.size_m[0] < 0.03
            for j, side in ((0, 1.0), (1, -1.0)):  # temple_left at +y, temple_right at -y
                assert np.allclose(c.getJointInfo(body, j)[13], (0.0, 0.0, -side))
                lo, hi = bounds(c, body, [j])
                assert hi[0] < frame_lo[0] + 1e-6  # folded behind the front, across it
                assert hi[1] - lo[1] > 0.115 and link_frame(c, body, j)[1, 3] * side > 0.05  # hinged at its end
                length = hi[1] - lo[1]
                reach = []
                for angle in np.linspace(0.0, c.getJointInfo(body, j)[9], 6):
                    c.resetJointState(body, j, angle)
                    reach.append(bounds(c, body, [j])[0][0])
                assert np.all(np.diff(reach) < 0)  # opening swings the free end away, towards -x
                lo, hi = bounds(c, body, [j])
                assert lo[0] < frame_lo[0] - 0.9 * length and hi[1] - lo[1] < 0.03  # open: perpendicular to the front
                assert (lo[1] + hi[1]) * side > 0.0
                c.resetJointState(body, j, 0.0)
            # Hinged at one height, the left temple above the right one, both tips down to the front's lower edge;
            # folded, they are clear of each other (checked above), but some states cross them.
            assert link_frame(c, body, 0)[2, 3] == pytest.approx(link_frame(c, body, 1)[2, 3])
            assert bounds(c, body, [0])[1][2] > bounds(c, body, [1])[1][2] + 1e-3
            bottoms = [bounds(c, body, [j])[0][2] for j in range(2)]
            assert bottoms == pytest.approx([frame_lo[2]] * 2, abs=1e-5)  # URDF numbers: 6 decimals
            states = [(a, b) for a in np.linspace(0, 1, 5) for b in np.linspace(0, 1, 5)]
            hits = 0
            for a, b in states:
                c.resetJointState(body, 0, a * c.getJointInfo(body, 0)[9])
                c.resetJointState(body, 1, b * c.getJointInfo(body, 1)[9])
                hits += interpenetrating(c, body, moving_only=True)
                assert not interpenetrating(c, body) or interpenetrating(c, body, moving_only=True)  # never the front
            assert hits < len(states) / 3
            met += hits > 0
            c.removeBody(body)
        assert met  # why the scene draws states again (test_small_objects_rest_on_the_floor_in_view)
    finally:
        c.disconnect()


def test_scissors_blade_b_turns_about_z_at_the_pivot(tmp_path):
    c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    try:
        for seed in (2, 3, 1_000_002):
            asset = articulated_instance('scissors', seed, tmp_path)
            body = c.loadURDF(str(asset.urdf.resolve()), useFixedBase=True)
            assert 0.14 <= asset.size_m[0] <= 0.22 + 1e-6 and asset.size_m[2] < 0.008
            assert np.allclose(c.getJointInfo(body, 0)[13], (0.0, 0.0, 1.0))
            closed = link_frame(c, body, 0)
            tip_y = bounds(c, body, [0])[1][1]
            upper = c.getJointInfo(body, 0)[9]
            for angle in np.linspace(0.0, upper, 5):
                c.resetJointState(body, 0, angle)
                T = link_frame(c, body, 0)
                assert np.allclose(T[:3, 3], closed[:3, 3], atol=1e-9)  # turning about the pivot
                expected = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                                     [0.0, 0.0, 1.0]])
                assert np.allclose(T[:3, :3], expected, atol=1e-9)
                assert not interpenetrating(c, body)  # blade_b turns above blade_a, its ring clear of blade_a's
            assert bounds(c, body, [0])[1][1] > tip_y + 0.3 * np.sin(upper) * asset.size_m[0] / 2  # its tip: to +y
            assert bounds(c, body, [-1])[1][2] < bounds(c, body, [0])[1][2]  # blade_b on top
            c.removeBody(body)
    finally:
        c.disconnect()


def test_category_instances_are_canonical_and_sized():
    for category in CATEGORIES:
        for seed in (3, 4, 1_000_003):
            instance = category_instance(category, seed)
            mesh = instance.mesh
            assert mesh.visual.kind == 'vertex'
            assert np.allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-9)  # origin at the bbox centre
            assert np.allclose(instance.size_m, mesh.bounds[1] - mesh.bounds[0])
            assert 0.015 < instance.size_m.min() and instance.size_m.max() < 0.35
            if category in ('bottle', 'bowl', 'can'):  # revolved about +y
                assert instance.size_m[0] == pytest.approx(instance.size_m[2], rel=0.01)
            if category in ('bottle', 'can'):  # upright: tall along y
                assert instance.size_m[1] > instance.size_m[0]
        assert category_instance(category, 3).split == 'train'
        assert category_instance(category, 1_000_003).split == 'test'


def test_instances_are_deterministic_per_seed_and_differ_across_seeds(tmp_path):
    for category in CATEGORIES:
        a, b = category_instance(category, 11), category_instance(category, 11)
        assert np.array_equal(a.mesh.vertices, b.mesh.vertices)
        assert np.array_equal(a.mesh.visual.vertex_colors, b.mesh.visual.vertex_colors)
        assert not np.allclose(a.size_m, category_instance(category, 12).size_m)
    for category in ARTICULATED_CATEGORIES:
        a = articulated_instance(category, 11, tmp_path / 'a')
        b = articulated_instance(category, 11, tmp_path / 'b')
        assert a.urdf.read_text() == b.urdf.read_text()
        assert not np.allclose(a.size_m, articulated_instance(category, 12, tmp_path / 'a').size_m)
        assert a.split == 'train' and articulated_instance(category, 1_000_011, tmp_path / 'a').split == 'test'
    rng = np.random.default_rng(0)
    assert all(s in TRAIN_SEEDS for s in draw_seeds(rng, 'train', 20))
    assert all(s in TEST_SEEDS and split_of(s) == 'test' for s in draw_seeds(rng, 'test', 20))


@pytest.fixture(scope='module')
def live_scene():
    config = ProceduralSceneConfig(camera=SMALL_CAMERA, rigid_per_layout=(4, 5), articulated_per_layout=(2, 2))
    with ProceduralScene(config, seed=3) as scene:
        yield scene


def test_joint_states_match_pybullet_and_limits(live_scene):
    c = live_scene.client
    frame = live_scene.render()
    articulated = [i for i in frame.instances if i.kind == 'articulated']
    assert len(articulated) == 2
    for inst in articulated:
        assert len(inst.parts) == c.getNumJoints(inst.body) + 1 and inst.joints
        for joint in inst.joints:
            info = c.getJointInfo(inst.body, joint.child_part - 1)
            assert info[1].decode() == joint.name
            assert joint.state == c.getJointState(inst.body, joint.child_part - 1)[0]
            assert joint.limits[0] <= joint.state <= joint.limits[1]
            assert np.linalg.norm(joint.axis_obj) == pytest.approx(1.0)
            # The drawn axes are the generator's, in the object frame (identity joint origins).
            assert np.allclose(np.abs(joint.axis_obj), np.abs(np.round(joint.axis_obj)), atol=1e-6)


def test_rigid_instances_rest_on_the_table(live_scene):
    scene = live_scene
    for _ in range(2):
        assert scene.resting() and len(scene.rigid) >= 3
        lowest = []
        for body, instance in scene.rigid.items():
            T = link_frame(scene.client, body, -1)
            z = (instance.mesh.vertices @ T[:3, :3].T + T[:3, 3])[:, 2]
            assert z.min() > scene.table_top_z - 0.004, (instance.name, z.min(), scene.table_top_z)
            assert np.all(np.abs(T[:2, 3] - scene.config.table_xy_m) < scene.table_half)
            lowest.append(z.min())
        assert min(lowest) < scene.table_top_z + 0.004  # none hovers
        scene.new_layout()


def test_small_objects_rest_on_the_floor_in_view():
    """Eyeglasses and scissors alone on the floor: upright on their lowest box, parts clear of each other, the camera
    brought closer in proportion to their size (cabinets and laptops: as configured)."""
    config = ProceduralSceneConfig(camera=SMALL_CAMERA, rigid_per_layout=(0, 0), articulated_per_layout=(1, 2),
                                   articulated_categories=('eyeglasses', 'scissors', 'laptop'),
                                   distance_range_m=(1.6, 3.0))
    scales = {}
    with ProceduralScene(config, seed=21) as scene:
        c = scene.client
        for _ in range(6):
            assert scene.table.body is None
            scale = scene.view_scale
            assert scene.scene.config.distance_range_m == pytest.approx((1.6 * scale, 3.0 * scale))
            frame = scene.render()
            categories = {inst.category for inst in frame.instances}
            scales[frozenset(categories)] = scale
            for k, inst in enumerate(frame.instances):
                assert np.allclose(inst.T_world_obj[:3, 2], (0.0, 0.0, 1.0), atol=1e-9)  # upright
                z = _box_corners(c, inst.body)[1][..., 2]
                assert z.min() == pytest.approx(1e-3, abs=1e-5)  # 1 mm above the floor
                assert not interpenetrating(c, inst.body)
                for joint in inst.joints:
                    assert joint.limits[0] <= joint.state <= joint.limits[1]
                assert frame.instance_mask(k).sum() > 30, inst.name
            scene.new_layout()
    assert any(0.3 <= scale < 0.8 for group, scale in scales.items() if 'laptop' not in group), scales
    assert all(scale == 1.0 for group, scale in scales.items() if 'laptop' in group), scales


def test_small_objects_on_the_table_keep_their_joint_states():
    config = ProceduralSceneConfig(camera=SMALL_CAMERA, rigid_per_layout=(3, 3), articulated_per_layout=(2, 2),
                                   articulated_categories=('eyeglasses', 'scissors'))
    with ProceduralScene(config, seed=33) as scene:
        c = scene.client
        assert scene.view_scale == 1.0
        for body in scene.articulated:
            z = _box_corners(c, body)[1][..., 2]
            assert z.min() == pytest.approx(scene.table_top_z + 1e-3, abs=1e-5)  # on the table
            assert not interpenetrating(c, body)
            states = [c.getJointState(body, j)[0] for j in range(c.getNumJoints(body))]
            for _ in range(120):  # the motors hold them whatever rests on them
                c.stepSimulation()
            assert np.allclose([c.getJointState(body, j)[0] for j in range(c.getNumJoints(body))], states, atol=2e-3)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp('procedural') / 'data'
    config = config_for('mixed', camera=SMALL_CAMERA, rigid_per_layout=(3, 4), articulated_per_layout=(1, 2),
                        distance_range_m=(1.0, 1.8))
    write_procedural(out, 4, 'mixed', config, seed=7, views_per_layout=2)
    return out, config


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def projected_silhouette(mesh: trimesh.Trimesh, T_cam: np.ndarray, camera: CameraModel) -> np.ndarray | None:
    points = mesh.vertices @ T_cam[:3, :3].T + T_cam[:3, 3]
    if points[:, 2].min() < 0.05:
        return None
    px = camera.project(points)
    fine = np.zeros((camera.height * 4, camera.width * 4), np.uint8)
    for triangle in np.round((px[mesh.faces] + 0.5) * 4 * 16 - 0.5 * 16).astype(np.int32):
        cv2.fillConvexPoly(fine, triangle, 1, lineType=cv2.LINE_8, shift=4)
    return fine[1::4, 1::4] > 0


def check_masks_and_poses(out: Path, records: list[dict], min_px: int = 150) -> dict:
    """Every written instance's masks against its written poses; how many pieces (rigid instances, articulated
    parts) of at least `min_px` pixels were compared, by kind and by category."""
    checked = {'rigid': 0, 'articulated': 0}
    for record in records:
        K = np.array(record['K'])
        camera = CameraModel.pinhole(320, 240, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        instance_png, part_png = read(out / record['instance_mask']), read(out / record['part_mask'])
        assert instance_png.dtype == np.uint16 and part_png.dtype == np.uint8
        depth = read(out / record['depth'])
        assert depth.dtype == np.uint16 and (depth > 0).any()
        for inst in record['instances']:
            mask = instance_png == inst['mask_value']
            assert mask.sum() == inst['visible_px']
            if inst['kind'] == 'rigid':
                mesh = trimesh.load(out / inst['asset'], process=False)
                assert np.allclose(mesh.extents, inst['size_m'], atol=1e-6)
                pieces = [(mesh, np.array(inst['T_cam_obj']), mask)]
                assert (part_png[mask] == 1).all()
            else:
                assert {p['part_id'] for p in inst['parts']} == set(range(len(inst['parts'])))
                for joint in inst['joints']:
                    assert joint['limits'][0] <= joint['state'] <= joint['limits'][1]
                folder = (out / inst['asset']).parent
                pieces = [(trimesh.load(folder / f"{inst['name']}_{p['name']}.obj", process=False),
                           np.array(p['T_cam_part']), mask & (part_png == p['part_id'] + 1)) for p in inst['parts']]
                assert sum(p['visible_px'] for p in inst['parts']) == inst['visible_px']
            for mesh, T, part_mask in pieces:
                if part_mask.sum() < min_px:
                    continue
                silhouette = projected_silhouette(mesh, T, camera)
                if silhouette is None:
                    continue
                grown = cv2.dilate(silhouette.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                # What is drawn lies inside the projection (occluders only take pixels away) ...
                assert (part_mask & grown).sum() >= 0.97 * part_mask.sum(), (inst['name'], record['index'])
                # ... and where nearly nothing covers it, the two agree: centroids and most projected vertices.
                if part_mask.sum() >= 0.9 * silhouette.sum():
                    ys, xs = np.nonzero(part_mask)
                    ys2, xs2 = np.nonzero(silhouette)
                    assert np.hypot(xs.mean() - xs2.mean(), ys.mean() - ys2.mean()) < 2.0
                    px = np.round(camera.project(mesh.vertices @ T[:3, :3].T + T[:3, 3])).astype(int)
                    ok = (px >= 0).all(axis=1) & (px[:, 0] < 320) & (px[:, 1] < 240)
                    inside = cv2.dilate(part_mask.astype(np.uint8), np.ones((5, 5), np.uint8))[
                        px[ok, 1], px[ok, 0]] > 0
                    assert inside.mean() > 0.9
                checked[inst['kind']] += 1
                checked[inst['category']] = checked.get(inst['category'], 0) + 1
    return checked


def test_written_poses_project_onto_instance_and_part_masks(dataset):
    out, _ = dataset
    meta = yaml.safe_load((out / 'meta.yaml').read_text())
    assert meta['complete'] and meta['num_frames'] == 4 and meta['kind'] == 'mixed'
    records = [json.loads(line) for line in (out / 'annotations.jsonl').read_text().splitlines()]
    assert [r['index'] for r in records] == [0, 1, 2, 3]
    checked = check_masks_and_poses(out, records)
    assert checked['rigid'] >= 3 and checked['articulated'] >= 2, checked


def test_written_drawers_eyeglasses_and_scissors_agree_with_their_part_masks(tmp_path):
    config = config_for('articulated', ('drawer', 'eyeglasses', 'scissors'), camera=SMALL_CAMERA,
                        articulated_per_layout=(1, 1), distance_range_m=(1.0, 1.8))
    out = write_procedural(tmp_path / 'data', 6, 'articulated', config, seed=11, views_per_layout=1)
    records = [json.loads(line) for line in (out / 'annotations.jsonl').read_text().splitlines()]
    seen = set()
    for record in records:
        for inst in record['instances']:
            seen.add(inst['category'])
            # part_id k is the k-th of the category's fixed parts, and each joint moves the part it names
            assert [p['name'] for p in sorted(inst['parts'], key=lambda p: p['part_id'])] == list(
                ARTICULATED_PARTS[inst['category']])
            assert [j['child_part'] for j in inst['joints']] == list(range(1, len(inst['parts'])))
            assert all(j['name'] == inst['parts'][j['child_part']]['name'] + '_joint' for j in inst['joints'])
            assert inst['visible_px'] > 100  # small ones too: seen from closer
    assert seen == {'drawer', 'eyeglasses', 'scissors'}
    checked = check_masks_and_poses(out, records, min_px=60)
    assert all(checked.get(category, 0) >= 2 for category in seen), checked


def test_writer_is_deterministic(dataset, tmp_path):
    out, config = dataset
    again = write_procedural(tmp_path / 'again', 2, 'mixed', config, seed=7, views_per_layout=2)
    first = (out / 'annotations.jsonl').read_text().splitlines()[:2]
    assert (again / 'annotations.jsonl').read_text().splitlines() == first
    for k in range(2):
        assert np.array_equal(read(out / 'rgb' / f'{k:06d}.png'), read(again / 'rgb' / f'{k:06d}.png'))
