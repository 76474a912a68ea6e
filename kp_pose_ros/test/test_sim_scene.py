"""The synthetic scene's ground truth agrees with what it renders: projection, metric depth, keypoints, determinism."""
import math
import os

import numpy as np
import pybullet_data
import pytest
from conftest import random_sim_frames

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import invert_transform, transform_points
from kp_pose_ros.robot.kinematics import RobotKinematics
from kp_pose_ros.robot.urdf import load_urdf
from kp_pose_ros.sim import backgrounds
from kp_pose_ros.sim.camera_effects import EffectRanges
from kp_pose_ros.sim.camera_presets import PRESET_NAMES, camera_from_fov, preset
from kp_pose_ros.sim.scene import SceneConfig, SimScene, look_at
from kp_pose_ros.sim.trajectory import RandomWaypointTrajectory, ScriptedTrajectory, min_jerk

PANDA_URDF = os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')
SMALL_CAMERA = CameraModel.pinhole(320, 240, 300.0, 300.0, 159.5, 119.5)
# Links whose meshes may cover each DREAM keypoint (a link frame origin sits on the joint to its parent, inside both
# links, and the hand's origin at the flange is covered by link7, the hand and the fingers). Written out here from
# the Panda's kinematic chain rather than taken from the scene, so the scene's link indexing is checked too.
NEIGHBOURS = {
    'panda_link0': {'panda_link0', 'panda_link1'},
    'panda_link2': {'panda_link1', 'panda_link2', 'panda_link3'},
    'panda_link3': {'panda_link2', 'panda_link3', 'panda_link4'},
    'panda_link4': {'panda_link3', 'panda_link4', 'panda_link5'},
    'panda_link6': {'panda_link5', 'panda_link6', 'panda_link7'},
    'panda_link7': {'panda_link6', 'panda_link7', 'panda_hand'},
    'panda_hand': {'panda_link7', 'panda_hand', 'panda_leftfinger', 'panda_rightfinger'},
}


def random_frames(seed: int, count: int, **config):
    return random_sim_frames(SceneConfig(camera=SMALL_CAMERA, **config), seed, count)


@pytest.fixture(scope='module')
def frames():
    return random_frames(1, 10) + random_frames(2, 10)


def window(image: np.ndarray, px, radius: int = 3) -> np.ndarray:
    u, v = int(round(px[0])), int(round(px[1]))
    return image[max(v - radius, 0):v + radius + 1, max(u - radius, 0):u + radius + 1]


def sphere_image_centre(camera: CameraModel, centre_cam: np.ndarray, radius: float) -> np.ndarray:
    """Pixel centre of the ellipse a sphere projects to. Rays x through the silhouette are tangent to the sphere:
    (x.c)^2 = |x|^2 (|c|^2 - r^2), a conic in normalised image coordinates whose centre is -A^-1 b. Off the
    optical axis it lies outward of the projected sphere centre (by ~1 px for a 6 cm ball at 0.5 m)."""
    c = np.asarray(centre_cam, dtype=float)
    conic = np.outer(c, c) - (c @ c - radius ** 2) * np.eye(3)
    x, y = -np.linalg.solve(conic[:2, :2], conic[:2, 2])
    return np.array([camera.fx * x + camera.cx, camera.fy * y + camera.cy])


def sphere_scene(camera: CameraModel, radius: float = 0.03):
    """A scene looking away from the robot (camera at y = 3 m facing +y) with a sphere body to move around."""
    scene = SimScene(SceneConfig(camera=camera, random_background=False), seed=0)
    scene.set_camera_pose(look_at([0.0, 3.0, 1.0], [0.0, 6.0, 1.0]))
    c = scene.client
    sphere = c.createMultiBody(baseVisualShapeIndex=c.createVisualShape(c.GEOM_SPHERE, radius=radius))
    return scene, sphere


@pytest.mark.parametrize('camera', [
    CameraModel.pinhole(160, 120, 150.0, 150.0, 79.5, 59.5),
    CameraModel.pinhole(160, 120, 170.0, 140.0, 60.3, 70.8),   # off-centre principal point, fx != fy
    CameraModel.pinhole(640, 480, 615.0, 615.0, 330.0, 230.0),
], ids=['centred', 'off_centre_160', 'off_centre_640'])
def test_rendered_sphere_lands_on_projected_pixel_at_metric_depth(camera):
    radius = 0.03
    scene, sphere = sphere_scene(camera, radius)
    rng = np.random.default_rng(0)
    T_base_cam = scene.T_base_cam
    errors = []
    try:
        for _ in range(8):
            z = rng.uniform(0.5, 1.5)
            pixel = rng.uniform([20, 20], [camera.width - 20, camera.height - 20])
            center_cam = np.array([(pixel[0] - camera.cx) / camera.fx * z, (pixel[1] - camera.cy) / camera.fy * z, z])
            center = transform_points(T_base_cam, center_cam[None])[0]
            scene.client.resetBasePositionAndOrientation(sphere, center.tolist(), [0, 0, 0, 1])
            frame = scene.render()
            rows, cols = np.nonzero(frame.object_seg == sphere)
            assert rows.size > 10
            np.testing.assert_allclose(camera.project(center_cam[None])[0], pixel, atol=1e-9)
            expected = sphere_image_centre(camera, center_cam, radius)
            errors.append(np.hypot(cols.mean() - expected[0], rows.mean() - expected[1]))
            # The nearest point of the sphere faces the camera; z-depth there is z - r (a sphere seen off-axis
            # shows its nearest point a bit off its projected centre, so take the minimum over its pixels).
            assert frame.depth_m[rows, cols].min() == pytest.approx(z - radius, abs=3e-3)
            assert frame.depth_m.dtype == np.float32
            background = frame.object_seg == -1
            assert background.any() and np.isnan(frame.depth_m[background]).all()
            assert np.isfinite(frame.depth_m[~background]).all()
    finally:
        scene.close()
    # Measured: at most 0.19 px (rasterisation); pybullet's usual half-pixel convention would be off by ~0.7 px.
    assert max(errors) < 0.3 and np.mean(errors) < 0.15, errors


def test_keypoints_land_on_their_links(frames):
    checked_link = 0
    in_image = visible = 0
    for frame in frames:
        link_names = np.array(frame.link_names)
        for name, px, is_in, is_visible in zip(frame.keypoint_names, frame.keypoints_px, frame.in_image,
                                               frame.visible):
            if not is_in:
                continue
            in_image += 1
            # No distractors: only the robot can be in front of a keypoint, so robot pixels surround every one.
            assert (window(frame.link_seg, px) >= 0).any(), (name, px)
            if is_visible:
                visible += 1
                seen = {str(n) for n in link_names[window(frame.link_seg, px)[window(frame.link_seg, px) >= 0]]}
                assert seen & NEIGHBOURS[name], (name, seen)
                checked_link += 1
    assert in_image >= 80 and checked_link >= 0.7 * in_image, (in_image, visible)


def test_depth_at_visible_keypoints_is_just_in_front_of_them(frames):
    gaps = []
    for frame in frames:
        for px, point, is_visible in zip(frame.keypoints_px, frame.keypoints_cam, frame.visible):
            u, v = np.round(px).astype(int) if is_visible else (0, 0)
            if is_visible and frame.link_seg[v, u] >= 0:
                gaps.append(point[2] - frame.depth_m[v, u])
    gaps = np.array(gaps)
    assert gaps.size >= 60
    # Link frame origins sit inside the links: the surface is a few cm in front, never further than the tolerance.
    assert 0.02 < np.median(gaps) < 0.10
    assert np.all(gaps < SceneConfig().own_link_tolerance_m)
    assert np.percentile(gaps, 5) > -0.03


def test_keypoint_ground_truth_matches_urdf_kinematics(frames):
    scene_config = SceneConfig()
    kinematics = RobotKinematics(load_urdf(PANDA_URDF), 'panda_link0', scene_config.keypoint_links)
    assert kinematics.joint_names[:7] == frames[0].joint_names
    for frame in frames[:5]:
        expected = kinematics.keypoints(frame.joint_positions)
        np.testing.assert_allclose(frame.keypoints_base, expected, atol=1e-5)
        np.testing.assert_allclose(frame.keypoints_cam,
                                   transform_points(invert_transform(frame.T_base_cam), frame.keypoints_base),
                                   atol=1e-9)
        np.testing.assert_allclose(frame.keypoints_px, SMALL_CAMERA.project(frame.keypoints_cam))
        assert frame.keypoint_names == scene_config.keypoint_links


def test_occluder_in_front_hides_keypoints():
    with SimScene(SceneConfig(camera=SMALL_CAMERA), seed=3) as scene:
        scene.set_camera_pose(look_at([2.0, 0.0, 0.5], [0.0, 0.0, 0.5]))
        before = scene.render()
        assert before.visible.sum() >= 5
        c = scene.client
        wall = c.createMultiBody(baseVisualShapeIndex=c.createVisualShape(c.GEOM_BOX, halfExtents=[0.02, 2, 2]),
                                 basePosition=[1.2, 0.0, 0.5])
        after = scene.render()
        np.testing.assert_array_equal(after.in_image, before.in_image)
        assert not after.visible.any()
        assert (after.object_seg == wall).mean() > 0.9
        assert (after.link_seg == -1).all()


def test_same_seed_same_frames_different_seed_different_frames():
    config = dict(num_distractors=2, depth_noise_std_m=0.002)
    a, b, c = random_frames(5, 2, **config), random_frames(5, 2, **config), random_frames(6, 2, **config)
    for fa, fb, fc in zip(a, b, c):
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_array_equal(fa.depth_m, fb.depth_m)
        np.testing.assert_array_equal(fa.link_seg, fb.link_seg)
        np.testing.assert_array_equal(fa.keypoints_px, fb.keypoints_px)
        np.testing.assert_array_equal(fa.T_base_cam, fb.T_base_cam)
        assert not np.array_equal(fa.rgb, fc.rgb)
        assert not np.allclose(fa.joint_positions, fc.joint_positions)
    assert len({name for name in a[0].body_names.values() if name.startswith('distractor:')}) >= 1


def test_two_scenes_coexist_in_one_process():
    with SimScene(SceneConfig(camera=SMALL_CAMERA), seed=0) as s1, \
            SimScene(SceneConfig(camera=SMALL_CAMERA), seed=0) as s2:
        s2.set_joint_positions(np.zeros(7))
        f1, f2 = s1.render(), s2.render()
        np.testing.assert_array_equal(f1.joint_positions, SceneConfig().initial_joint_positions)
        assert not np.allclose(f1.keypoints_base, f2.keypoints_base)
        np.testing.assert_allclose(s1.render().keypoints_base, f1.keypoints_base)


def test_camera_placement_stays_in_the_configured_ranges():
    config = SceneConfig(camera=SMALL_CAMERA)
    look_at_point = np.array(config.look_at_m)
    jitter = config.look_at_jitter_m * math.sqrt(3)
    with SimScene(config, seed=4) as scene:
        for _ in range(50):
            T = scene.randomize_camera()
            np.testing.assert_array_equal(T, scene.T_base_cam)
            position, R = T[:3, 3], T[:3, :3]
            np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
            assert np.linalg.det(R) == pytest.approx(1.0)
            # The optical axis passes within the jitter of the look-at point, at the configured distance.
            to_target = look_at_point - position
            along = to_target @ R[:, 2]
            assert np.linalg.norm(to_target - along * R[:, 2]) <= jitter + 1e-9
            assert config.distance_range_m[0] - jitter <= along <= config.distance_range_m[1] + jitter
            # Above the floor, looking down, image "down" roughly world down (small roll).
            assert position[2] > 0.0 and R[2, 2] < 0.1 and R[2, 1] < -0.5


def test_joint_limits_come_from_the_urdf_with_a_margin():
    model = load_urdf(PANDA_URDF)
    with SimScene(SceneConfig(camera=SMALL_CAMERA), seed=0) as scene:
        margin = SceneConfig().joint_limit_margin_rad
        for name, (lo, hi) in zip(scene.joint_names, scene.joint_limits):
            joint = model.joints[name]
            assert lo == pytest.approx(joint.limits.lower + margin)
            assert hi == pytest.approx(joint.limits.upper - margin)
        with pytest.raises(ValueError, match='panda_joint4'):
            scene.set_joint_positions([0, 0, 0, 0.5, 0, 1, 0])
        with pytest.raises(ValueError, match='7 finite joint positions'):
            scene.set_joint_positions([0, 0, 0])
        for _ in range(20):
            q = scene.sample_joint_positions()
            assert np.all((q >= scene.joint_limits[:, 0]) & (q <= scene.joint_limits[:, 1]))
            assert not scene.in_collision(q)
        arm_into_floor = np.array([0.0, 1.7, 0.0, -0.1, 0.0, 1.5, 0.0])
        assert scene.in_collision(arm_into_floor)
        scene.set_joint_positions(arm_into_floor)
        assert scene.link_pose('panda_hand')[2, 3] < 0.15


def test_random_waypoint_trajectory_is_smooth_within_limits_and_deterministic():
    limits = np.array([[-2.9, 2.9], [-1.7, 1.7], [-2.9, 2.9], [-3.0, -0.1], [-2.9, 2.9], [0.0, 3.7], [-2.9, 2.9]])
    speed = 0.5
    traj = RandomWaypointTrajectory(limits, seed=7, speed=speed)
    times = np.arange(0.0, 60.0, 0.01)
    q = np.array([traj.at(t) for t in times])
    assert np.all(q >= limits[:, 0]) and np.all(q <= limits[:, 1])
    velocity = np.diff(q, axis=0) / 0.01
    assert np.abs(velocity).max() <= speed * 1.001
    assert np.abs(velocity).max() > 0.5 * speed
    assert np.ptp(q, axis=0).min() > 0.5  # it really moves every joint
    # Same (seed, t) -> same q, whatever order times are asked in; another seed moves differently.
    again = RandomWaypointTrajectory(limits, seed=7, speed=speed)
    for t in (42.0, 3.3, 0.0, 59.99):
        np.testing.assert_array_equal(again.at(t), traj.at(t))
    assert not np.allclose(RandomWaypointTrajectory(limits, seed=8, speed=speed).at(3.3), traj.at(3.3))
    with pytest.raises(ValueError, match='>= 0'):
        traj.at(-1.0)
    with pytest.raises(ValueError, match='lower < upper'):
        RandomWaypointTrajectory(limits[:, ::-1], seed=0)
    with pytest.raises(ValueError, match='shape'):
        RandomWaypointTrajectory(np.zeros(7), seed=0)


def test_random_waypoint_trajectory_only_visits_accepted_waypoints():
    limits = np.array([[-1.0, 1.0], [-1.0, 1.0]])
    traj = RandomWaypointTrajectory(limits, seed=0, speed=1.0, accept=lambda q: q[0] > 0.2)
    assert min(traj.at(t)[0] for t in np.arange(0.0, 30.0, 0.05)) > 0.2 - 1e-12
    with pytest.raises(RuntimeError, match='rejected'):
        RandomWaypointTrajectory(limits, seed=0, accept=lambda q: False, max_rejections=10)


def test_scripted_trajectory_loops_through_its_waypoints():
    waypoints = np.array([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]])
    traj = ScriptedTrajectory(waypoints, [1.0, 2.0, 0.5])
    assert traj.period == 3.5
    for t, expected in ((0.0, 0), (1.0, 1), (3.0, 2), (3.5, 0), (4.5, 1), (7.0 + 3.0, 2)):
        np.testing.assert_allclose(traj.at(t), waypoints[expected], atol=1e-12)
    np.testing.assert_allclose(traj.at(2.0), (waypoints[1] + waypoints[2]) / 2)  # min-jerk is symmetric
    assert min_jerk(0.25) == pytest.approx(0.103515625)
    with pytest.raises(ValueError, match='one duration per waypoint'):
        ScriptedTrajectory(waypoints, [1.0, 1.0])
    with pytest.raises(ValueError, match='positive'):
        ScriptedTrajectory(waypoints, [1.0, 0.0, 1.0])


def test_camera_presets():
    assert set(PRESET_NAMES) == {'realsense_d435', 'realsense_d415', 'azure_kinect', 'azure_kinect_nfov',
                                 'azure_kinect_wfov', 'kinect_xbox360'}
    d435 = preset('realsense_d435')
    assert (d435.width, d435.height, d435.fx, d435.cx, d435.cy) == (640, 480, 615.0, 320.0, 240.0)
    assert preset('azure_kinect').hfov_deg == pytest.approx(93.0, abs=0.5)
    assert preset('azure_kinect_nfov').hfov_deg == pytest.approx(75.0)
    assert preset('azure_kinect_wfov').hfov_deg == pytest.approx(120.0)
    assert preset('kinect_xbox360').fx == pytest.approx(525.0, abs=0.5)
    assert camera_from_fov(320, 240, 90.0).fx == pytest.approx(160.0)
    with pytest.raises(ValueError, match='realsense_d435'):
        preset('realsense')


def test_scene_config_refuses_what_it_cannot_render():
    distorted = CameraModel(640, 480, preset('realsense_d435').K, D=[0.1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match='pinhole'):
        SceneConfig(camera=distorted)
    with pytest.raises(ValueError, match='distance_range_m'):
        SceneConfig(distance_range_m=(2.0, 1.0))
    with pytest.raises(ValueError, match='near_m'):
        SceneConfig(near_m=0.0)
    with pytest.raises(ValueError, match='keypoint links'):
        SimScene(SceneConfig(camera=SMALL_CAMERA, keypoint_links=('panda_link99',)))
    with pytest.raises(ValueError, match='T_base_cam'):
        with SimScene(SceneConfig(camera=SMALL_CAMERA)) as scene:
            scene.set_camera_pose(np.eye(3))


def test_backgrounds_are_varied_reproducible_images():
    generators = (backgrounds.gradient, backgrounds.value_noise, backgrounds.random_shapes, backgrounds.checkerboard,
                  backgrounds.random_background)
    for make in generators:
        image = make(np.random.default_rng(3), 48, 64)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, make(np.random.default_rng(3), 48, 64))
        assert image.reshape(-1, 3).std(axis=0).max() > 1.0  # not a flat colour
    assert not np.array_equal(backgrounds.random_background(np.random.default_rng(1), 48, 64),
                              backgrounds.random_background(np.random.default_rng(2), 48, 64))
    with pytest.raises(ValueError, match='positive'):
        backgrounds.gradient(np.random.default_rng(0), 0, 10)
    with pytest.raises(TypeError, match='Generator'):
        backgrounds.checkerboard(np.random, 10, 10)


def test_pbr_and_tiny_renderers_draw_the_same_geometry():
    """The PBR mirror puts every link and distractor where pybullet has it: the two renderers' masks agree up to
    anti-aliased edges and mesh detail, and so do their depths."""
    q, T = None, None
    results = {}
    for renderer in ('pbr', 'tiny'):
        with SimScene(SceneConfig(camera=SMALL_CAMERA, renderer=renderer, num_distractors=3), seed=11) as scene:
            q = scene.sample_joint_positions() if q is None else q
            scene.set_joint_positions(q)
            T = scene.randomize_camera() if T is None else T
            scene.set_camera_pose(T)
            results[renderer] = scene.render()
    pbr, tiny = results['pbr'], results['tiny']
    robot_p, robot_t = pbr.link_seg >= 0, tiny.link_seg >= 0
    assert robot_t.sum() > 500
    assert (robot_p & robot_t).sum() / (robot_p | robot_t).sum() > 0.9
    both = robot_p & robot_t
    assert np.mean(pbr.link_seg[both] == tiny.link_seg[both]) > 0.97
    hit = np.isfinite(pbr.depth_m) & np.isfinite(tiny.depth_m) & (pbr.object_seg == tiny.object_seg)
    assert np.median(np.abs(pbr.depth_m[hit] - tiny.depth_m[hit])) < 0.002
    assert set(np.unique(pbr.object_seg)) - {-1} <= set(pbr.body_names)
    np.testing.assert_array_equal(pbr.visible, tiny.visible)


def test_depth_sensor_and_camera_effects_apply_to_the_published_images_not_the_ground_truth():
    clean = random_frames(4, 1)[0]
    real = random_frames(4, 1, depth_sensor='realsense_d435', camera_effects=EffectRanges())[0]
    np.testing.assert_array_equal(real.link_seg, clean.link_seg)
    np.testing.assert_array_equal(real.keypoints_px, clean.keypoints_px)
    np.testing.assert_array_equal(real.visible, clean.visible)
    assert not np.array_equal(real.rgb, clean.rgb)
    both = np.isfinite(clean.depth_m) & np.isfinite(real.depth_m)
    holes = np.isfinite(clean.depth_m) & ~np.isfinite(real.depth_m)
    assert holes.any() and both.mean() > 0.5  # stereo holes, most pixels kept
    relative = np.abs(real.depth_m[both] / clean.depth_m[both] - 1.0)
    assert 0.0 < np.median(relative) < 0.03  # noise and the unit's scale bias (datasheet: within 2 % at 2 m)
    with pytest.raises(ValueError, match='not both'):
        SceneConfig(depth_sensor='stereo', depth_noise_std_m=0.002)
    with pytest.raises(ValueError, match='tof'):
        SceneConfig(depth_sensor='lidar')


def test_pbr_backdrops_come_from_photographs_when_installed():
    from kp_pose_ros.sim import photos

    if not photos.have_photos():
        pytest.skip('no catalogued photograph installed (pip install scikit-image)')
    config = SceneConfig(camera=SMALL_CAMERA, photo_chance=1.0)
    with SimScene(config, seed=2) as scene:
        scene.set_camera_pose(look_at([0.0, 3.0, 1.0], [0.0, 6.0, 3.0]))  # up and away: mostly backdrop
        frame = scene.render()
    empty = frame.object_seg == -1
    assert empty.mean() > 0.3
    # A photograph, not a flat or procedural fill: many distinct colours and fine detail.
    backdrop = frame.rgb[empty]
    assert len(np.unique(backdrop.reshape(-1, 3), axis=0)) > 2000


def test_working_poses_cluster_around_the_ready_pose():
    ready = np.array(SceneConfig().initial_joint_positions)
    with SimScene(SceneConfig(camera=SMALL_CAMERA, renderer='tiny', working_pose_chance=1.0), seed=4) as scene:
        working = np.array([scene.sample_joint_positions() for _ in range(40)])
        assert np.all(working >= scene.joint_limits[:, 0]) and np.all(working <= scene.joint_limits[:, 1])
    with SimScene(SceneConfig(camera=SMALL_CAMERA, renderer='tiny'), seed=4) as scene:
        uniform = np.array([scene.sample_joint_positions() for _ in range(40)])
    assert np.median(np.abs(working - ready)) < 0.6 * np.median(np.abs(uniform - ready))
