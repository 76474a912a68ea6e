"""Articulated instances read from URDF agree with pybullet and with the URDF's own boxes; category models survive a
save/load and turn exact part box poses back into joint values, with rotated joint origins too."""
import numpy as np
import pybullet
import pytest
import trimesh
from pybullet_utils import bullet_client
from scipy.spatial.transform import Rotation

from kp_pose_ros.articulated.categories import ArticulatedInstance, CategoryModel
from kp_pose_ros.core.transforms import invert_transform
from kp_pose_ros.sim.procedural import articulated_instance
from kp_pose_ros.sim.pybullet_mirror import link_frame

# A base, an arm on a revolute joint about a tilted axis with a rotated origin, and a slider on a prismatic joint with
# a rotated origin hanging off the arm: what the procedural instances (identity origins, axis-aligned axes) never test.
TILTED_URDF = """<?xml version="1.0"?>
<robot name="tilted">
  <link name="base"><visual><origin xyz="0.02 0 -0.01" rpy="0 0 0"/><geometry><box size="0.3 0.2 0.05"/></geometry>
  </visual></link>
  <link name="arm"><visual><origin xyz="0.1 0.01 0.02" rpy="0 0 0"/><geometry><box size="0.2 0.04 0.03"/></geometry>
  </visual></link>
  <link name="slider"><visual><origin xyz="0 0.03 0" rpy="0 0 0"/><geometry><box size="0.05 0.08 0.02"/></geometry>
  </visual></link>
  <joint name="hinge" type="revolute"><parent link="base"/><child link="arm"/>
    <origin xyz="0.1 -0.05 0.03" rpy="0.3 -0.4 0.9"/><axis xyz="0.2 1 0.5"/>
    <limit lower="-1.0" upper="1.5" effort="1" velocity="1"/></joint>
  <joint name="slide" type="prismatic"><parent link="arm"/><child link="slider"/>
    <origin xyz="0.15 0 0.01" rpy="-0.5 0.2 0.1"/><axis xyz="1 0.3 0"/>
    <limit lower="0" upper="0.1" effort="1" velocity="1"/></joint>
</robot>
"""


@pytest.fixture
def tilted(tmp_path):
    path = tmp_path / 'tilted.urdf'
    path.write_text(TILTED_URDF)
    return ArticulatedInstance(path, 'tilted')


def random_q(instance, rng):
    return np.array([rng.uniform(j.lower, j.upper) for j in instance.joints])


def box_poses(instance, q, T):
    return T @ instance.link_poses(q) @ instance.box_offsets()


@pytest.mark.parametrize('category,seeds', [('laptop', (2, 9)), ('cabinet', (1, 2, 5))])
def test_link_poses_match_pybullet(category, seeds, tmp_path):
    c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    rng = np.random.default_rng(0)
    try:
        for seed in seeds:
            instance = ArticulatedInstance(articulated_instance(category, seed, tmp_path).urdf, category)
            body = c.loadURDF(str(instance.urdf.resolve()), useFixedBase=True)
            info = [c.getJointInfo(body, j) for j in range(c.getNumJoints(body))]
            link_of = {i[12].decode(): i[0] for i in info}
            joint_of = {i[1].decode(): i[0] for i in info}
            assert set(link_of) == set(instance.part_names[1:])
            for _ in range(3):
                q = random_q(instance, rng)
                for joint, value in zip(instance.joints, q):
                    c.resetJointState(body, joint_of[joint.name], value)
                T_root = invert_transform(link_frame(c, body, -1))
                poses = instance.link_poses(q)
                assert np.allclose(poses[0], np.eye(4))
                for k, name in enumerate(instance.part_names[1:], start=1):
                    assert np.allclose(poses[k], T_root @ link_frame(c, body, link_of[name]), atol=1e-5), name
            c.removeBody(body)
    finally:
        c.disconnect()


def collision_boxes(urdf_text: str, link: str) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of a link's <collision> boxes (axis-aligned origins, as the procedural instances write them)."""
    import xml.etree.ElementTree as ET

    element = next(e for e in ET.fromstring(urdf_text).findall('link') if e.get('name') == link)
    lo, hi = [], []
    for collision in element.findall('collision'):
        centre = np.array(collision.find('origin').get('xyz').split(), float)
        size = np.array(collision.find('geometry/box').get('size').split(), float)
        lo.append(centre - size / 2)
        hi.append(centre + size / 2)
    return np.min(lo, axis=0), np.max(hi, axis=0)


@pytest.mark.parametrize('category,seed', [('laptop', 4), ('cabinet', 2), ('cabinet', 11)])
def test_part_boxes_match_the_urdf(category, seed, tmp_path):
    asset = articulated_instance(category, seed, tmp_path)
    instance = ArticulatedInstance(asset.urdf, category)
    text = asset.urdf.read_text()
    for part in instance.parts:
        # The box is the visual mesh's (not its random surface samples', which miss thin handles by millimetres) ...
        mesh = trimesh.load(asset.urdf.parent / f'{asset.name}_{part.name}.obj', process=False)
        assert np.allclose(part.centre, mesh.bounds.mean(axis=0), atol=1e-9), part.name
        assert np.allclose(part.extents, mesh.extents, atol=1e-9), part.name
        # ... and the collision boxes too, but for the laptop's sub-millimetre screen and keyboard decals.
        lo, hi = collision_boxes(text, part.name)
        assert np.allclose(part.centre, (lo + hi) / 2, atol=2e-3) and np.allclose(part.extents, hi - lo, atol=3e-3)
        assert part.scale == pytest.approx(np.linalg.norm(part.extents))
        assert np.allclose(part.from_normalised(part.normalised()), part.points)
        assert np.abs(part.normalised()).max() <= 0.5 + 1e-9


def test_category_model_save_load_round_trip(tmp_path):
    instances = [ArticulatedInstance(articulated_instance('laptop', s, tmp_path).urdf, 'laptop') for s in (3, 8)]
    model = CategoryModel.fit('laptop', instances)
    rng = np.random.default_rng(1)
    for part in model.parts:
        part.keypoints['fps'] = rng.uniform(-0.5, 0.5, (3, 3))
    path = tmp_path / 'laptop.yaml'
    model.save(path)
    loaded = CategoryModel.load(path)
    assert loaded.category == 'laptop' and loaded.instances == model.instances == [i.name for i in instances]
    assert loaded.part_names == ('base', 'lid') and loaded.joint_names == ('lid_joint',)
    for a, b in zip(model.parts, loaded.parts):
        assert np.allclose(a.proportions, b.proportions, atol=1e-8) and np.linalg.norm(b.proportions) == \
            pytest.approx(1.0)
        assert np.allclose(a.keypoints['fps'], b.keypoints['fps'], atol=1e-8)
    for a, b in zip(model.joints, loaded.joints):
        assert (a.name, a.type, a.parent, a.child) == (b.name, b.type, b.parent, b.child)
        for name in ('axis', 'origin_rotation', 'hinge', 'offset', 'lower', 'upper'):
            assert np.allclose(getattr(a, name), getattr(b, name), atol=1e-8), name
    assert np.allclose(loaded.keypoints('fps'), model.keypoints('fps'), atol=1e-8)
    with pytest.raises(KeyError, match='learned'):
        loaded.keypoints('learned')
    data = model.to_dict()
    data['format'] = 99
    with pytest.raises(ValueError, match='format'):
        CategoryModel.from_dict(data)


@pytest.mark.parametrize('category,seed', [('laptop', 5), ('cabinet', 1), ('cabinet', 5)])
def test_joint_values_from_exact_box_poses(category, seed, tmp_path):
    instance = ArticulatedInstance(articulated_instance(category, seed, tmp_path).urdf, category)
    model = CategoryModel.fit(category, [instance])
    assert {j.type for j in model.joints} <= {'revolute', 'prismatic'}
    rng = np.random.default_rng(seed)
    scales = np.array([p.scale for p in instance.parts])
    for _ in range(10):
        q = random_q(instance, rng)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix(), rng.normal(0, 1, 3)
        assert np.allclose(model.joint_values(box_poses(instance, q, T), scales), q, atol=1e-9)


def test_joint_values_with_rotated_origins_and_tilted_axes(tilted):
    assert tilted.part_names == ('base', 'arm', 'slider')
    assert [(j.type, j.parent, j.child) for j in tilted.joints] == [('revolute', 0, 1), ('prismatic', 1, 2)]
    origin = Rotation.from_euler('xyz', [0.3, -0.4, 0.9]).as_matrix()
    axis = np.array([0.2, 1.0, 0.5]) / np.linalg.norm([0.2, 1.0, 0.5])
    assert np.allclose(tilted.joints[0].axis, origin @ axis)  # the axis in the parent link frame
    model = CategoryModel.fit('tilted', [tilted])
    assert np.allclose(model.joints[0].origin_rotation, origin)
    hinge = tilted.parts[0].from_normalised(model.joints[0].hinge)
    assert np.allclose(hinge, [0.1, -0.05, 0.03])
    rng = np.random.default_rng(2)
    scales = np.array([p.scale for p in tilted.parts])
    for _ in range(20):
        q = random_q(tilted, rng)
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
        assert np.allclose(model.joint_values(box_poses(tilted, q, T), scales), q, atol=1e-9)
    # The FK itself: the hinge point stays put and the slider moves along its axis.
    q0, q1 = np.array([0.7, 0.02]), np.array([0.7, 0.09])
    slider0, slider1 = tilted.link_poses(q0)[2], tilted.link_poses(q1)[2]
    arm = tilted.link_poses(q0)[1]
    assert np.allclose(slider1[:3, 3] - slider0[:3, 3], 0.07 * arm[:3, :3] @ tilted.joints[1].axis)
    assert np.allclose(arm[:3, 3], [0.1, -0.05, 0.03])


def test_instances_with_different_part_lists_are_refused(tmp_path):
    a = ArticulatedInstance(articulated_instance('cabinet', 1, tmp_path).urdf, 'cabinet')
    b = ArticulatedInstance(articulated_instance('cabinet', 2, tmp_path).urdf, 'cabinet')
    assert a.part_names != b.part_names
    with pytest.raises(ValueError, match='one part list'):
        CategoryModel.fit('cabinet', [a, b])
    with pytest.raises(ValueError, match='at least one'):
        CategoryModel.fit('cabinet', [])
