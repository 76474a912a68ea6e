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
    CATEGORIES,
    TEST_SEEDS,
    TRAIN_SEEDS,
    articulated_instance,
    category_instance,
    draw_seeds,
    split_of,
)
from kp_pose_ros.sim.procedural_scene import ProceduralScene, ProceduralSceneConfig
from kp_pose_ros.sim.procedural_writer import config_for, write_procedural
from kp_pose_ros.sim.pybullet_mirror import link_frame

SMALL_CAMERA = CameraModel.pinhole(320, 240, 300.0, 300.0, 159.5, 119.5)


def full_aabb(c, body):
    boxes = [c.getAABB(body, link) for link in range(-1, c.getNumJoints(body))]
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


@pytest.mark.parametrize('category', ARTICULATED_CATEGORIES)
def test_urdfs_load_with_their_limits_and_closed_bbox(category, tmp_path):
    c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    try:
        for seed in range(4):
            asset = articulated_instance(category, seed, tmp_path)
            body = c.loadURDF(str(asset.urdf.resolve()), useFixedBase=True)
            joints = [c.getJointInfo(body, j) for j in range(c.getNumJoints(body))]
            assert joints and all(j[2] in (pybullet.JOINT_REVOLUTE, pybullet.JOINT_PRISMATIC) for j in joints)
            for j in joints:
                assert j[8] == 0.0 and 0.2 < j[9] < 2.1  # closed at the lower limit, metres or radians
            lo, hi = full_aabb(c, body)  # all joints at 0: closed; pybullet pads AABBs by ~1 mm
            assert np.allclose((lo + hi) / 2, 0.0, atol=2e-3)
            assert np.allclose(hi - lo, asset.size_m, atol=4e-3)
            for j in joints:  # open fully: the parts move out, towards +x (the front)
                c.resetJointState(body, j[0], j[9])
            assert full_aabb(c, body)[1][0] > hi[0] + 0.05 or category == 'laptop'
            assert full_aabb(c, body)[1][2] > hi[2] + 0.05 or category == 'cabinet'
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


def test_written_poses_project_onto_instance_and_part_masks(dataset):
    out, _ = dataset
    meta = yaml.safe_load((out / 'meta.yaml').read_text())
    assert meta['complete'] and meta['num_frames'] == 4 and meta['kind'] == 'mixed'
    records = [json.loads(line) for line in (out / 'annotations.jsonl').read_text().splitlines()]
    assert [r['index'] for r in records] == [0, 1, 2, 3]
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
                if part_mask.sum() < 150:
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
    assert checked['rigid'] >= 3 and checked['articulated'] >= 2, checked


def test_writer_is_deterministic(dataset, tmp_path):
    out, config = dataset
    again = write_procedural(tmp_path / 'again', 2, 'mixed', config, seed=7, views_per_layout=2)
    first = (out / 'annotations.jsonl').read_text().splitlines()[:2]
    assert (again / 'annotations.jsonl').read_text().splitlines() == first
    for k in range(2):
        assert np.array_equal(read(out / 'rgb' / f'{k:06d}.png'), read(again / 'rgb' / f'{k:06d}.png'))
