"""URDF parsing and batched forward kinematics: against pybullet's Panda, a hand-computed toy arm, and bad URDFs."""
import math
import os
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_pose_ros.robot.kinematics import (
    PANDA_BASE_LINK,
    PANDA_DENSE_KEYPOINT_LINKS,
    PANDA_KEYPOINT_LINKS,
    RobotKinematics,
)
from kp_pose_ros.robot.urdf import URDFError, load_urdf, parse_urdf

pybullet = pytest.importorskip('pybullet')
pybullet_data = pytest.importorskip('pybullet_data')

PANDA_URDF = os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')
PANDA_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))

# base -j1 (revolute z)-> l1 -j2 (prismatic x)-> l2 -mount (fixed, pitch 90 deg)-> l3 -j3 (continuous y)-> tool -> tip
TOY_URDF = """<?xml version="1.0" encoding="utf-8"?>
<robot name="toy">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/><link name="tool"/><link name="tip"/>
  <joint name="j1" type="revolute">
    <parent link="base"/><child link="l1"/>
    <origin xyz="0 0 0.5"/>
    <axis xyz="0 0 1"/>
    <limit lower="-1.5" upper="1.5" velocity="2.0" effort="10"/>
  </joint>
  <joint name="j2" type="prismatic">
    <parent link="l1"/><child link="l2"/>
    <origin xyz="0.2 0 0" rpy="0 0 0"/>
    <axis xyz="2 0 0"/>
    <limit lower="0" upper="0.3" velocity="0.5" effort="10"/>
  </joint>
  <joint name="mount" type="fixed">
    <parent link="l2"/><child link="l3"/>
    <origin xyz="0 0 0.1" rpy="0 1.5707963267948966 0"/>
  </joint>
  <joint name="j3" type="continuous">
    <parent link="l3"/><child link="tool"/>
    <origin xyz="0 0 0.1"/>
    <axis xyz="0 1 0"/>
  </joint>
  <joint name="tip_joint" type="fixed">
    <parent link="tool"/><child link="tip"/>
    <origin xyz="0.05 0 0"/>
  </joint>
</robot>
"""


@pytest.fixture(scope='module')
def panda_model():
    return load_urdf(PANDA_URDF)


@pytest.fixture(scope='module')
def toy():
    return RobotKinematics(parse_urdf(TOY_URDF), 'base', ('l1', 'l3', 'tip'))


def _rot_y(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_panda_fk_matches_pybullet_link_frames(panda_model):
    kin = RobotKinematics(panda_model, PANDA_BASE_LINK, PANDA_DENSE_KEYPOINT_LINKS)
    assert kin.joint_names == PANDA_JOINTS
    client = pybullet.connect(pybullet.DIRECT)
    try:
        robot = pybullet.loadURDF(PANDA_URDF, [0, 0, 0], useFixedBase=True, physicsClientId=client)
        link_index, joint_index = {}, {}
        for i in range(pybullet.getNumJoints(robot, physicsClientId=client)):
            info = pybullet.getJointInfo(robot, i, physicsClientId=client)
            joint_index[info[1].decode()] = i
            link_index[info[12].decode()] = i  # pybullet's link i is the child of joint i
        q = kin.sample_joints(np.random.default_rng(7), 50)
        poses = kin.link_poses(q)
        assert poses.shape == (50, len(kin.link_names), 4, 4)
        np.testing.assert_array_equal(poses[:, 0], np.broadcast_to(np.eye(4), (50, 4, 4)))
        worst_position = worst_angle = 0.0
        for b in range(len(q)):
            for name, value in zip(kin.joint_names, q[b]):
                pybullet.resetJointState(robot, joint_index[name], value, physicsClientId=client)
            for li, link in enumerate(kin.link_names[1:], start=1):
                state = pybullet.getLinkState(robot, link_index[link], computeForwardKinematics=1,
                                              physicsClientId=client)
                position, orientation = np.array(state[4]), state[5]
                worst_position = max(worst_position, np.abs(poses[b, li, :3, 3] - position).max())
                relative = Rotation.from_quat(orientation).inv() * Rotation.from_matrix(poses[b, li, :3, :3])
                worst_angle = max(worst_angle, relative.magnitude())
    finally:
        pybullet.disconnect(client)
    # The URDF writes pi/2 as 1.57079632679, so both sides agree to about 1e-7, not to machine precision.
    assert worst_position < 1e-5
    assert worst_angle < 1e-5
    keypoints = kin.keypoints(q)
    assert keypoints.shape == (50, len(PANDA_DENSE_KEYPOINT_LINKS), 3)
    for k, name in enumerate(PANDA_DENSE_KEYPOINT_LINKS):
        np.testing.assert_array_equal(keypoints[:, k], poses[:, kin.link_names.index(name), :3, 3])


def test_panda_default_keypoints_and_limits(panda_model):
    kin = RobotKinematics(panda_model, PANDA_BASE_LINK, PANDA_KEYPOINT_LINKS)
    assert kin.joint_names == PANDA_JOINTS
    assert kin.joint_types == ('revolute',) * 7
    np.testing.assert_allclose(kin.lower, [-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671])
    np.testing.assert_allclose(kin.upper, [2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671])
    np.testing.assert_allclose(kin.velocity_limits, [2.175] * 4 + [2.61] * 3)
    zero = kin.keypoints(np.zeros(7))
    assert zero.shape == (7, 3)
    # At q = 0 the Panda stands straight: link2 at the shoulder, link4 0.0825 m forward at the elbow,
    # the hand 0.088 m forward and 0.107 m below link7, which is at 0.333 + 0.316 + 0.384 m.
    np.testing.assert_allclose(zero[0], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(zero[1], [0, 0, 0.333], atol=1e-9)
    np.testing.assert_allclose(zero[3], [0.0825, 0, 0.649], atol=1e-9)
    np.testing.assert_allclose(zero[6], [0.088, 0, 1.033 - 0.107], atol=1e-9)


def test_branching_keypoints_take_the_union_of_chains(panda_model):
    kin = RobotKinematics(panda_model, 'panda_link4', ('panda_leftfinger', 'panda_rightfinger', 'panda_link5'))
    assert kin.joint_names == ('panda_joint5', 'panda_joint6', 'panda_joint7', 'panda_finger_joint1',
                               'panda_finger_joint2')
    np.testing.assert_allclose(kin.lower[3:], [0.0, 0.0])
    np.testing.assert_allclose(kin.upper[3:], [0.04, 0.04])
    q = np.array([0.0, 0.0, 0.0, 0.03, 0.01])
    left, right, _ = kin.keypoints(q)
    # The finger axes are the hand's +y and -y, so the fingers are q1 + q2 apart.
    assert np.linalg.norm(left - right) == pytest.approx(0.04, abs=1e-12)


def test_toy_arm_hand_computed_poses(toy):
    assert toy.joint_names == ('j1', 'j2', 'j3')
    assert toy.joint_types == ('revolute', 'prismatic', 'continuous')
    np.testing.assert_array_equal(toy.lower, [-1.5, 0.0, -np.inf])
    np.testing.assert_array_equal(toy.upper, [1.5, 0.3, np.inf])
    np.testing.assert_array_equal(toy.velocity_limits, [2.0, 0.5, np.inf])
    assert toy.link_names == ('base', 'l1', 'l2', 'l3', 'tool', 'tip')

    # q = 0: l3 is pitched 90 deg (its z along base +x, its x along base -z), so the 0.1 m along l3's z to the tool
    # goes along base +x and the 0.05 m along the tool's x to the tip goes down.
    np.testing.assert_allclose(toy.keypoints([0.0, 0.0, 0.0]),
                               [[0, 0, 0.5], [0.2, 0, 0.6], [0.3, 0, 0.55]], atol=1e-12)

    # j1 = 90 deg turns the arm onto +y, j2 slides 0.1 m further out, j3 = 0.3 rad swings the tip about tool y.
    q = [math.pi / 2, 0.1, 0.3]
    expected_tip = [0.0, 0.4 - 0.05 * math.sin(0.3), 0.6 - 0.05 * math.cos(0.3)]
    np.testing.assert_allclose(toy.keypoints(q), [[0, 0, 0.5], [0, 0.3, 0.6], expected_tip], atol=1e-12)
    poses = toy.link_poses(q)
    np.testing.assert_allclose(poses[4, :3, :3], _rot_z(math.pi / 2) @ _rot_y(math.pi / 2 + 0.3), atol=1e-12)
    np.testing.assert_allclose(poses[4, :3, 3], [0, 0.4, 0.6], atol=1e-12)
    np.testing.assert_array_equal(poses[:, 3], np.broadcast_to([0, 0, 0, 1.0], (6, 4)))


def test_batch_matches_single_vectors(toy):
    q = toy.sample_joints(np.random.default_rng(3), 16)
    batch = toy.keypoints(q)
    assert batch.shape == (16, 3, 3)
    for b in range(16):
        np.testing.assert_allclose(batch[b], toy.keypoints(q[b]), atol=1e-15)


def test_clip_and_sample_respect_limits(toy):
    clipped = toy.clip_to_limits([[2.0, -0.1, 10.0], [-2.0, 0.5, -10.0]])
    np.testing.assert_array_equal(clipped, [[1.5, 0.0, 10.0], [-1.5, 0.3, -10.0]])
    np.testing.assert_array_equal(toy.clip_to_limits([0.1, 0.2, 0.3]), [0.1, 0.2, 0.3])

    q = toy.sample_joints(np.random.default_rng(0), 2000, margin=0.05)
    assert q.shape == (2000, 3)
    assert np.all(q >= [-1.45, 0.05, -math.pi + 0.05]) and np.all(q <= [1.45, 0.25, math.pi - 0.05])
    # Uniform: every joint's samples span nearly its whole allowed range.
    np.testing.assert_allclose(q.min(axis=0), [-1.45, 0.05, -math.pi + 0.05], atol=0.02)
    np.testing.assert_allclose(q.max(axis=0), [1.45, 0.25, math.pi - 0.05], atol=0.02)
    np.testing.assert_array_equal(q, toy.sample_joints(np.random.default_rng(0), 2000, margin=0.05))
    with pytest.raises(ValueError, match='j2'):
        toy.sample_joints(np.random.default_rng(0), 1, margin=0.2)


@pytest.mark.parametrize('q, message', [
    (np.zeros(2), r'shape \(3,\) or \(B, 3\)'),
    (np.zeros((2, 2, 3)), 'shape'),
    ([0.0, np.nan, 0.0], 'NaN'),
])
def test_bad_joint_vectors_are_refused(toy, q, message):
    with pytest.raises(ValueError, match=message):
        toy.keypoints(q)


def test_keypoint_link_errors(panda_model):
    with pytest.raises(URDFError, match="no link 'panda_link9'"):
        RobotKinematics(panda_model, PANDA_BASE_LINK, ('panda_link9',))
    with pytest.raises(ValueError, match='twice'):
        RobotKinematics(panda_model, PANDA_BASE_LINK, ('panda_link2', 'panda_link2'))


def test_batch_fk_timing(panda_model):
    kin = RobotKinematics(panda_model, PANDA_BASE_LINK, PANDA_KEYPOINT_LINKS)
    q = kin.sample_joints(np.random.default_rng(0), 4096)
    kin.keypoints(q)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        kin.keypoints(q)
        times.append(time.perf_counter() - start)
    print(f'\nPanda keypoint FK, B=4096: median {1e3 * np.median(times):.2f} ms')


def test_urdf_model_structure(panda_model):
    assert panda_model.name == 'panda'
    assert panda_model.root_link == 'panda_link0'
    assert panda_model.parent_joint('panda_link0') is None
    assert panda_model.joints['panda_finger_joint2'].type == 'prismatic'
    chain = panda_model.chain('panda_link0', 'panda_hand')
    assert [j.name for j in chain] == list(PANDA_JOINTS) + ['panda_joint8', 'panda_hand_joint']
    assert panda_model.chain('panda_link3', 'panda_link3') == []
    hand = panda_model.joints['panda_hand_joint']
    np.testing.assert_allclose(Rotation.from_matrix(hand.origin[:3, :3]).as_euler('xyz'), [0, 0, -0.785398163397])
    assert hand.axis is None and hand.limits is None


def _robot(body):
    return f'<robot name="bad">{body}</robot>'


_JOINT = '<joint name="{name}" type="{type}"><parent link="{parent}"/><child link="{child}"/>{extra}</joint>'
_LIMIT = '<limit lower="-1" upper="1" velocity="1"/>'


def _joint(name, parent, child, type='revolute', extra=_LIMIT):
    return _JOINT.format(name=name, type=type, parent=parent, child=child, extra=extra)


@pytest.mark.parametrize('text, message', [
    ('<robot name="bad"><link name="a"></robot>', 'malformed URDF XML'),
    ('', 'empty'),
    ('<model name="x"/>', 'root element must be <robot>'),
    (_robot('<link name="a"/>' + _joint('j', 'a', 'b')), "child link 'b', which is not declared"),
    (_robot('<link name="b"/>' + _joint('j', 'a', 'b')), "parent link 'a', which is not declared"),
    (_robot('<link name="a"/><link name="b"/><link name="c"/>' + _joint('j', 'a', 'b')),
     r'not connected: 2 root links \(a, c\)'),
    (_robot('<link name="a"/><link name="b"/><link name="c"/>' + _joint('j1', 'a', 'b') + _joint('j2', 'c', 'b')),
     "'b' is the child of more than one joint"),
    (_robot('<link name="a"/><link name="b"/>' + _joint('j1', 'a', 'b') + _joint('j2', 'b', 'a')),
     'no root link'),
    (_robot('<link name="a"/><link name="b"/>' + _joint('j', 'a', 'b', type='spherical')), "unknown type 'spherical'"),
    (_robot('<link name="a"/><link name="b"/>' + _joint('j', 'a', 'b', extra='')), 'has no <limit>'),
    (_robot('<link name="a"/><link name="b"/>' + _joint('j', 'a', 'b', extra='<limit lower="0" upper="1"/>')),
     'no velocity'),
    (_robot('<link name="a"/><link name="b"/>'
            + _joint('j', 'a', 'b', extra='<limit lower="1" upper="0" velocity="1"/>')), 'lower limit 1.0 above'),
    (_robot('<link name="a"/><link name="b"/>' + _joint('j', 'a', 'b', extra=_LIMIT + '<axis xyz="0 0 0"/>')),
     'zero axis'),
    (_robot('<link name="a"/><link name="b"/>' + _joint('j', 'a', 'b', extra=_LIMIT + '<origin xyz="0 ${x} 0"/>')),
     "origin xyz must be 3 numbers, got '0 \\$\\{x\\} 0'"),
    (_robot('<link name="a"/><link name="a"/>'), "link name 'a' is declared more than once"),
])
def test_malformed_urdfs_raise_clear_errors(text, message):
    with pytest.raises(URDFError, match=message):
        parse_urdf(text)


def test_chain_errors():
    model = parse_urdf(_robot(
        '<link name="a"/><link name="b"/><link name="c"/><link name="d"/>'
        + _joint('ab', 'a', 'b') + _joint('ac', 'a', 'c', type='fixed', extra='')
        + _joint('cd', 'c', 'd', type='floating', extra='')))
    assert model.root_link == 'a'
    with pytest.raises(URDFError, match=r"'c' is not below 'b' in the link tree \(its path from the root is a -> c\)"):
        model.chain('b', 'c')
    with pytest.raises(URDFError, match="no link 'e'"):
        model.chain('a', 'e')
    with pytest.raises(URDFError, match="joint 'cd' on the chain from 'a' to 'd' is floating"):
        model.chain('a', 'd')
    assert [j.name for j in model.chain('a', 'c')] == ['ac']


def test_load_urdf_missing_file(tmp_path):
    with pytest.raises(URDFError, match='cannot read URDF file .*missing.urdf'):
        load_urdf(tmp_path / 'missing.urdf')
    path = tmp_path / 'toy.urdf'
    path.write_text(TOY_URDF)
    assert load_urdf(path).root_link == 'base'
