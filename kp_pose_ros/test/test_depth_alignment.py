"""Robot surface model, depth alignment and the RGB-D known-joints fitter, on real pybullet renders of the Panda."""
import os
import xml.etree.ElementTree as ET

import numpy as np
import pybullet_data
import pytest
from scipy.spatial.transform import Rotation

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.rigid_fit import p3p_hypotheses, rigid_hypotheses
from kp_pose_ros.core.transforms import invert_transform, make_transform, rotation_error_deg, transform_points
from kp_pose_ros.robot.depth_alignment import align_to_depth, depth_agreement, depth_view, keypoints_from_depth
from kp_pose_ros.robot.depth_fit import RobotDepthFitter
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS, RobotKinematics
from kp_pose_ros.robot.surface import resolve_mesh_path, sample_robot_surface, with_absolute_mesh_paths
from kp_pose_ros.robot.urdf import URDFError, parse_urdf
from kp_pose_ros.sim.camera_presets import camera_from_fov
from kp_pose_ros.sim.scene import SceneConfig, SimScene

PANDA_URDF = os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')


@pytest.fixture(scope='module')
def render():
    """A frame with depth noise like a RealSense's, and one whose arm is cut by the image border (only three
    keypoints visible, the detector guesses the rest)."""
    config = SceneConfig(camera=camera_from_fov(640, 480, 70.21), num_distractors=3, distance_range_m=(0.8, 1.8),
                         depth_noise_std_m=0.002)
    with SimScene(config, seed=4242) as scene:
        scene.randomize_camera()
        scene.set_joint_positions(scene.sample_joint_positions())
        frame = scene.render()
    return frame


def offset(T, translation_m, rotation_deg, seed=0):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    direction = rng.normal(size=3)
    delta = make_transform(Rotation.from_rotvec(np.radians(rotation_deg) * axis / np.linalg.norm(axis)).as_matrix(),
                           translation_m * direction / np.linalg.norm(direction))
    return T @ delta  # about the robot base, where the keypoints are


def pose_error(T_cam_base, frame):
    T_true = invert_transform(frame.T_base_cam)
    return (np.linalg.norm(invert_transform(T_cam_base)[:3, 3] - frame.T_base_cam[:3, 3]),
            rotation_error_deg(T_cam_base[:3, :3], T_true[:3, :3]))


# ---------------------------------------------------------------- surface model
def test_mesh_paths_resolve_like_ros_tools(tmp_path):
    (tmp_path / 'pkg' / 'meshes').mkdir(parents=True)
    mesh = tmp_path / 'pkg' / 'meshes' / 'a.stl'
    mesh.write_bytes(b'')
    lookup = {'pkg': str(tmp_path / 'pkg')}.get
    assert resolve_mesh_path('package://pkg/meshes/a.stl', None, lookup) == str(mesh)
    # pybullet's convention: package:// relative to the URDF, the package name dropped or kept.
    assert resolve_mesh_path('package://meshes/a.stl', str(tmp_path / 'pkg'), None) == str(mesh)
    assert resolve_mesh_path('package://pkg/meshes/a.stl', str(tmp_path), None) == str(mesh)
    assert resolve_mesh_path(f'file://{mesh}', None) == str(mesh)
    assert resolve_mesh_path('meshes/a.stl', str(tmp_path / 'pkg')) == str(mesh)
    with pytest.raises(FileNotFoundError, match='package://other/x.stl.*looked at'):
        resolve_mesh_path('package://other/x.stl', str(tmp_path), lookup)


def test_surface_of_primitives_lies_on_them(tmp_path):
    urdf = """<robot name="r">
      <link name="base"><visual><origin xyz="0 0 0.1"/><geometry><box size="0.2 0.4 0.2"/></geometry></visual></link>
      <link name="arm"><collision><geometry><cylinder radius="0.05" length="0.3"/></geometry></collision></link>
      <link name="tip"><visual><geometry><sphere radius="0.03"/></geometry></visual></link>
      <link name="bad"><visual><geometry><mesh filename="missing.stl"/></geometry></visual></link>
      <joint name="j1" type="revolute"><parent link="base"/><child link="arm"/><axis xyz="0 0 1"/>
        <limit lower="-1" upper="1" velocity="1"/></joint>
      <joint name="j2" type="fixed"><parent link="arm"/><child link="tip"/></joint>
      <joint name="j3" type="fixed"><parent link="arm"/><child link="bad"/></joint>
    </robot>"""
    surface = sample_robot_surface(urdf, ('base', 'arm', 'tip', 'bad'), str(tmp_path), num_points=2000, seed=3)
    box = surface.points[surface.link_index == 0] - [0, 0, 0.1]
    assert np.allclose(np.max(np.abs(box) / [0.1, 0.2, 0.1], axis=1), 1.0, atol=1e-6)
    cylinder = surface.points[surface.link_index == 1]
    on_side = np.abs(np.hypot(cylinder[:, 0], cylinder[:, 1]) - 0.05) < 5e-4  # 32 flat facets
    on_cap = np.isclose(np.abs(cylinder[:, 2]), 0.15, atol=1e-6)
    assert np.all(on_side | on_cap)  # the collision geometry is the fallback when a link has no visual
    sphere = surface.points[surface.link_index == 2]
    assert np.all(np.abs(np.linalg.norm(sphere, axis=1) - 0.03) < 2e-3)
    assert len(surface.missing) == 1 and 'missing.stl' in surface.missing[0]
    assert np.allclose(np.linalg.norm(surface.normals, axis=1), 1.0)
    # Outward normals: on the box, each points away from its centre.
    assert np.all(np.sum(surface.normals[surface.link_index == 0] * box, axis=1) > 0)
    again = sample_robot_surface(urdf, ('base', 'arm', 'tip', 'bad'), str(tmp_path), num_points=2000, seed=3)
    assert np.array_equal(again.points, surface.points)
    with pytest.raises(URDFError, match='no link has usable geometry'):
        sample_robot_surface(urdf, ('bad',), str(tmp_path))
    with pytest.raises(URDFError, match="no link 'nope'"):
        sample_robot_surface(urdf, ('nope',), str(tmp_path))


def test_absolute_mesh_paths_survive_the_topic():
    with open(PANDA_URDF, encoding='utf-8') as stream:
        text = with_absolute_mesh_paths(stream.read(), os.path.dirname(PANDA_URDF))
    uris = [mesh.get('filename') for mesh in ET.fromstring(text).iter('mesh')]
    assert uris and all(u.startswith('file://') and os.path.isfile(u[7:]) for u in uris)
    # Without any directory the rewritten description still yields the whole surface.
    kin = RobotKinematics(parse_urdf(text), 'panda_link0', PANDA_KEYPOINT_LINKS)
    assert not sample_robot_surface(text, kin.link_names, None, num_points=500).missing


def test_surface_model_matches_the_rendered_depth(panda, render):
    """FK + meshes + visual origins against pybullet's own render: the camera-facing surface points land on the
    measured depth (within its noise), except where another link hides them."""
    kin, surface = panda
    points, normals = surface.in_base(kin.link_poses(render.joint_positions))
    T = invert_transform(render.T_base_cam)
    cam = transform_points(T, points)
    facing = np.sum((normals @ T[:3, :3].T) * cam, axis=1) < 0
    px = np.round(render.camera.project(cam[facing])).astype(int)
    inside = (px[:, 0] >= 0) & (px[:, 0] < 640) & (px[:, 1] >= 0) & (px[:, 1] < 480)
    gap = render.depth_m[px[inside, 1], px[inside, 0]] - cam[facing][inside, 2]
    assert inside.sum() > 500
    assert np.mean(np.abs(gap) < 0.01) > 0.6, np.percentile(np.abs(gap), [25, 50, 75])
    with pytest.raises(ValueError, match='one pose per surface link'):
        surface.in_base(np.eye(4)[None])


# ---------------------------------------------------------------- depth alignment
def test_depth_view_of_a_plane():
    camera = CameraModel.from_fov(64, 48, 60.0)
    depth = np.full((48, 64), 2.0)
    depth[:5, :5] = np.nan
    depth[10, 10] = 0.0
    view = depth_view(depth, camera, stride=1)
    assert np.allclose(view.cloud[:, 2], 2.0)
    assert np.allclose(view.cloud_normals, [0, 0, -1], atol=1e-9)
    assert np.isnan(view.points[10, 10]).all() and np.isnan(view.points[0, 0]).all()
    lifted = keypoints_from_depth(view, np.array([[32.0, 24.0], [np.nan, np.nan], [500.0, 5.0]]),
                                  behind_surface_m=0.1)
    assert lifted[0, 2] == pytest.approx(2.1, abs=2e-3) and np.isnan(lifted[1:]).all()
    with pytest.raises(ValueError, match='aligned to this camera'):
        depth_view(np.ones((10, 10)), camera)


def test_alignment_recovers_the_pose_from_centimetres_off(panda, render):
    kin, surface = panda
    points, normals = surface.in_base(kin.link_poses(render.joint_positions))
    view = depth_view(render.depth_m, render.camera)
    start = offset(invert_transform(render.T_base_cam), 0.05, 5.0)
    aligned = align_to_depth([view], [points], [normals], render.camera, start)
    assert aligned.success, aligned.message
    t_err, r_err = pose_error(aligned.T_cam_base, render)
    assert t_err < 0.006 and r_err < 0.6, (t_err, r_err)
    assert aligned.coverage > 0.8 and aligned.rms_m < 0.005
    # The truth outvotes the start.
    votes = depth_agreement(view, points, normals, render.camera,
                            np.stack([invert_transform(render.T_base_cam), start]))
    assert votes[0] > 2 * votes[1]


def test_alignment_without_the_robot_in_the_depth_fails_cleanly(panda, render):
    kin, surface = panda
    points, normals = surface.in_base(kin.link_poses(render.joint_positions))
    empty = depth_view(np.full(render.depth_m.shape, np.nan), render.camera)
    aligned = align_to_depth([empty], [points], [normals], render.camera, invert_transform(render.T_base_cam))
    assert not aligned.success and aligned.T_cam_base is None and 'matched' in aligned.message
    far = depth_view(np.full(render.depth_m.shape, 9.0), render.camera)
    aligned = align_to_depth([far], [points], [normals], render.camera, invert_transform(render.T_base_cam))
    assert not aligned.success
    with pytest.raises(ValueError, match='one model per depth view'):
        align_to_depth([empty], [], [], render.camera, np.eye(4))


def test_minimal_set_hypotheses_contain_the_truth():
    rng = np.random.default_rng(1)
    src = rng.uniform(-0.5, 0.5, (7, 3))
    T = make_transform(Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix(), [0.1, 0.2, 1.5])
    dst = transform_points(T, src)
    dst[5] += 0.5
    src[6] = np.nan
    hypotheses = rigid_hypotheses(src, dst)
    assert len(hypotheses) == 20  # C(6, 3) subsets of the six valid pairs
    assert min(np.abs(h - T).max() for h in hypotheses) < 1e-9
    assert rigid_hypotheses(src[:2], dst[:2]).shape == (0, 4, 4)
    camera = CameraModel.from_fov(640, 480, 70.0)
    pixels = camera.project(dst)
    p3p = p3p_hypotheses(src, pixels, camera.K)
    assert min(np.abs(h - T).max() for h in p3p) < 1e-6


def test_fitter_finds_an_arm_cut_by_the_image_border(panda):
    """Only three keypoints in view and the detector's guesses for the others: PnP fails, the depth-checked
    hypotheses do not."""
    from kp_pose_ros.paths import model_file
    from kp_pose_ros.robot.keypoints import RobotKeypointDetector
    from kp_pose_ros.robot.pose import fit_known_joints
    from kp_pose_ros.sim.trajectory import RandomWaypointTrajectory

    kin, surface = panda
    config = SceneConfig(camera=camera_from_fov(640, 480, 70.21), num_distractors=3, distance_range_m=(0.8, 1.8),
                         depth_noise_std_m=0.002)
    with SimScene(config, seed=4322) as scene:
        scene.randomize_camera()
        trajectory = RandomWaypointTrajectory(scene.joint_limits, seed=4322, speed=0.4,
                                              accept=lambda q: not scene.in_collision(q))
        scene.set_joint_positions(trajectory.at(2.0))
        frame = scene.render()
    assert frame.visible.sum() <= 3
    pixels, confidence = RobotKeypointDetector(model_file('robot_keypoints_panda.onnx'), 'cpu').detect(frame.rgb)
    pixels[confidence < 0.3] = np.nan
    pnp = fit_known_joints(frame.joint_positions, pixels, frame.camera, kin)
    assert not pnp.success or pose_error(pnp.T_cam_base, frame)[0] > 0.1
    fitter = RobotDepthFitter(surface, kin)
    aligned = fitter.fit(frame.depth_m, frame.camera, frame.joint_positions, pixels,
                         candidates=(pnp.T_cam_base if pnp.success else None,))
    assert aligned.success, aligned.message
    t_err, r_err = pose_error(aligned.T_cam_base, frame)
    assert t_err < 0.01 and r_err < 1.0, (t_err, r_err)
    # A good previous pose ends the search at once, with the same answer.
    again = fitter.fit(frame.depth_m, frame.camera, frame.joint_positions, pixels, candidates=(aligned.T_cam_base,))
    assert pose_error(again.T_cam_base, frame)[0] < 0.01
    other = RobotKinematics(parse_urdf(open(PANDA_URDF).read()), 'panda_link0', ('panda_link3',))
    with pytest.raises(ValueError, match='surface model covers links'):
        RobotDepthFitter(surface, other)
