"""MeshRenderer on the real headless OpenGL stack (Mesa EGL): intrinsics, depth, ids, anti-aliasing, shadows, Panda."""
import os

import numpy as np
import pybullet as p
import pybullet_data
import trimesh

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.sim.renderer import Light, Material, MeshRenderer

OFF_CENTRE = CameraModel.pinhole(640, 480, fx=600.0, fy=580.0, cx=300.7, cy=251.3)
SMALL = CameraModel.pinhole(320, 240, fx=300.0, fy=300.0, cx=159.5, cy=119.5)


def _pose(R=None, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    T[:3, 3] = t
    return T


def _square(half: float) -> trimesh.Trimesh:
    """A two-sided square in the z=0 plane, centred on the origin."""
    vertices = [[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]]
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3], [0, 2, 1], [0, 3, 2]], process=False)


def _camera_in_world() -> np.ndarray:
    """A tilted optical frame, so that the tests also check the optical-frame convention of set_camera_pose."""
    R = trimesh.transformations.euler_matrix(0.3, -0.2, 0.5)[:3, :3]
    return _pose(R, (0.4, -0.3, 1.2))


def test_intrinsics_and_depth_are_exact_with_an_off_centre_k():
    # Squares facing the camera: their masks are exactly the pixel centres inside the projected square.
    squares = {5: (0.1, -0.05, 1.0, 0.02), 6: (-0.3, 0.2, 1.5, 0.03), 7: (0.25, 0.18, 0.8, 0.01),
               8: (-0.02, 0.0, 2.5, 0.05)}
    T_world_cam = _camera_in_world()
    with MeshRenderer(OFF_CENTRE, shadows=False) as renderer:
        renderer.set_camera_pose(T_world_cam)
        renderer.set_lights([Light('directional', direction=T_world_cam[:3, 2])])
        for instance_id, (x, y, z, half) in squares.items():
            handle = renderer.add_mesh(_square(half), instance_id, Material(base_color=(1, 1, 1, 1)))
            renderer.set_pose(handle, T_world_cam @ _pose(t=(x, y, z)))
        out = renderer.render()
    cam = OFF_CENTRE
    vs, us = np.mgrid[0:cam.height, 0:cam.width]
    for instance_id, (x, y, z, half) in squares.items():
        mask = out.instance == instance_id
        u0, u1 = cam.fx * (x - half) / z + cam.cx, cam.fx * (x + half) / z + cam.cx
        v0, v1 = cam.fy * (y - half) / z + cam.cy, cam.fy * (y + half) / z + cam.cy
        expected = (us > u0) & (us < u1) & (vs > v0) & (vs < v1)
        assert (mask != expected).sum() == 0, instance_id
        centroid = np.array([us[mask].mean(), vs[mask].mean()])
        projected_centre = cam.project(np.array([[x, y, z]]))[0]
        assert np.abs(centroid - projected_centre).max() < 0.5, instance_id
        assert np.abs(out.depth_m[mask] - z).max() < 1e-3, instance_id
    assert np.isnan(out.depth_m[out.instance == -1]).all()
    assert out.rgb.shape == (480, 640, 3) and out.rgb.dtype == np.uint8
    assert out.depth_m.dtype == np.float32 and out.instance.dtype == np.int32


def _tilted_boxes(renderer: MeshRenderer) -> None:
    """Two overlapping boxes turned about the optical axis, so their edges are slanted and cross each other."""
    boxes = {3: (-0.03, 0.5, (1, 0.2, 0.2, 1)), 1000: (0.04, -0.3, (0.2, 1, 0.2, 1))}
    for instance_id, (x, angle, colour) in boxes.items():
        handle = renderer.add_mesh(trimesh.creation.box([0.12, 0.09, 0.05]), instance_id, Material(base_color=colour))
        renderer.set_pose(handle, _pose(trimesh.transformations.rotation_matrix(angle, [0, 0, 1])[:3, :3],
                                        (x, 0.0, 0.6 + 0.05 * instance_id / 1000)))
    renderer.set_lights([Light('directional', direction=(0.2, 0.3, 1.0), intensity=4.0)])


def test_ids_are_exact_and_rgb_is_anti_aliased_over_the_background():
    background = np.full((SMALL.height, SMALL.width, 3), (10, 20, 200), np.uint8)
    with MeshRenderer(SMALL, shadows=False) as renderer:
        _tilted_boxes(renderer)
        renderer.set_background(background)
        out = renderer.render()
    assert set(np.unique(out.instance)) == {-1, 3, 1000}
    hit = out.instance >= 0
    # Pixels whose 3x3 neighbourhood is all background are the background image exactly.
    padded = np.pad(hit, 1)
    near_hit = np.zeros_like(hit)
    for dv in range(3):
        for du in range(3):
            near_hit |= padded[dv:dv + SMALL.height, du:du + SMALL.width]
    assert (out.rgb[~near_hit] == background[~near_hit]).all()
    # Along the slanted outline, colours lie strictly between the box's and the background's blue channel.
    outline = near_hit & ~hit
    blue = out.rgb[..., 2][outline].astype(int)
    inner_blue = int(np.median(out.rgb[..., 2][out.instance == 3]))
    assert ((blue > inner_blue + 5) & (blue < 195)).sum() > 50


def test_box_casts_a_soft_shadow_where_the_light_points():
    camera_above = _pose(np.diag([1.0, -1.0, -1.0]), (0.0, 0.0, 1.5))  # looking straight down, image x = world x
    floor = trimesh.creation.box([3.0, 3.0, 0.02])
    box = trimesh.creation.box([0.2, 0.2, 0.2])
    brightness = {}
    for shadows in (True, False):
        with MeshRenderer(SMALL, shadows=shadows) as renderer:
            renderer.set_camera_pose(camera_above)
            renderer.set_pose(renderer.add_mesh(floor, 0, Material(roughness=0.9)), _pose(t=(0, 0, -0.01)))
            renderer.set_pose(renderer.add_mesh(box, 1), _pose(t=(0, 0, 0.1)))
            # Light along +x and down at 45 degrees: the box's shadow covers the floor for 0.1 < x < 0.3.
            renderer.set_lights([Light('directional', direction=(1.0, 0.0, -1.0), intensity=4.0),
                                 Light('point', position=(0.0, 0.5, 1.0), intensity=0.5)])
            out = renderer.render()
        pixels = SMALL.project(np.array([[0.2, 0.0, 1.5], [-0.2, 0.0, 1.5]])).round().astype(int)
        brightness[shadows] = [float(out.rgb[v - 2:v + 3, u - 2:u + 3].mean()) for u, v in pixels]
        assert (out.instance[pixels[:, 1], pixels[:, 0]] == 0).all()
    in_shadow, lit = brightness[True]
    assert in_shadow < 0.5 * lit
    assert abs(brightness[False][0] - brightness[False][1]) < 0.1 * brightness[False][1]


def test_same_inputs_render_identical_images():
    with MeshRenderer(SMALL) as renderer:
        _tilted_boxes(renderer)
        first = renderer.render()
        extra = renderer.add_mesh(trimesh.creation.icosphere(radius=0.05), 9)
        renderer.set_pose(extra, _pose(t=(0, 0, 0.5)))
        assert 9 in renderer.render().instance
        renderer.remove(extra)
        second = renderer.render()
    for a, b in ((first.rgb, second.rgb), (first.depth_m, second.depth_m), (first.instance, second.instance)):
        np.testing.assert_array_equal(a, b)


def _panda_links(client: int, robot: int) -> dict[int, tuple[list[trimesh.Trimesh], np.ndarray]]:
    """{link index: (visual meshes in the link's visual frame, T_world_visual)} from pybullet's FK."""
    links = {}
    for _, link, _, _, filename, local_pos, local_orn, _ in p.getVisualShapeData(robot, physicsClientId=client):
        if link == -1:
            pos, orn = p.getBasePositionAndOrientation(robot, physicsClientId=client)
        else:  # pybullet's visual frames are relative to the link's inertial frame
            pos, orn = p.getLinkState(robot, link, computeForwardKinematics=True, physicsClientId=client)[:2]
        pos, orn = p.multiplyTransforms(pos, orn, local_pos, local_orn, physicsClientId=client)
        loaded = trimesh.load(filename.decode(), force='scene')
        links[link] = (list(loaded.geometry.values()), _pose(np.reshape(p.getMatrixFromQuaternion(orn), (3, 3)), pos))
    return links


def test_panda_renders_one_instance_per_link():
    client = p.connect(p.DIRECT)
    try:
        robot = p.loadURDF(os.path.join(pybullet_data.getDataPath(), 'franka_panda/panda.urdf'), useFixedBase=True,
                           physicsClientId=client)
        for joint, angle in enumerate((0.0, -0.4, 0.0, -2.2, 0.0, 1.9, 0.8)):
            p.resetJointState(robot, joint, angle, physicsClientId=client)
        links = _panda_links(client, robot)
    finally:
        p.disconnect(client)
    eye, target = np.array([1.3, 0.8, 0.9]), np.array([0.0, 0.0, 0.45])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    T_world_cam = _pose(np.column_stack([x, np.cross(z, x), z]), eye)
    with MeshRenderer(OFF_CENTRE) as renderer:
        renderer.set_camera_pose(T_world_cam)
        renderer.set_lights([Light('directional', direction=(-0.3, 0.4, -1.0)),
                             Light('spot', position=(1.0, -1.0, 2.0), direction=(-0.5, 0.5, -1.0), intensity=15.0)])
        renderer.add_mesh(trimesh.creation.box([3.0, 3.0, 0.01]), 100, Material(base_color=(0.5, 0.5, 0.5, 1)))
        for link, (meshes, T_world_visual) in links.items():
            for mesh in meshes:  # textured multi-material links: one mesh per material, all with the link's id
                renderer.set_pose(renderer.add_mesh(mesh, link + 1), T_world_visual)
        out = renderer.render()
    seen = set(np.unique(out.instance).tolist())
    link_ids = {link + 1 for link in links}
    assert len(link_ids) == 11 and seen - {-1, 100} <= link_ids and len(seen & link_ids) >= 9
    robot_depth = out.depth_m[(out.instance >= 0) & (out.instance != 100)]
    assert np.isfinite(robot_depth).all() and 0.8 < robot_depth.min() and robot_depth.max() < 2.5
    assert out.rgb[out.instance >= 0].std() > 10  # shaded, not flat



def test_renderers_outlive_each_other():
    """Renderers share the process's EGL display: closing or dropping one leaves the others drawing."""
    first, second, third = MeshRenderer(SMALL), MeshRenderer(SMALL), MeshRenderer(SMALL)
    for renderer in (first, second, third):
        _tilted_boxes(renderer)
    expected = first.render()
    second.close()
    del third
    np.testing.assert_array_equal(first.render().instance, expected.instance)
    with MeshRenderer(SMALL) as fourth:
        _tilted_boxes(fourth)
        np.testing.assert_array_equal(fourth.render().instance, expected.instance)
    np.testing.assert_array_equal(first.render().rgb, expected.rgb)
    first.close()
    with MeshRenderer(SMALL) as again:  # the last close terminated the display; a new renderer starts afresh
        _tilted_boxes(again)
        np.testing.assert_array_equal(again.render().instance, expected.instance)


def test_renders_from_another_thread_than_the_one_that_built_it():
    """A node builds its scene at configure (executor thread) and renders on a worker thread."""
    import threading

    with MeshRenderer(SMALL) as renderer:
        _tilted_boxes(renderer)
        expected = renderer.render()
        results = []
        worker = threading.Thread(target=lambda: results.append(renderer.render()))
        worker.start()
        worker.join()
        np.testing.assert_array_equal(results[0].rgb, expected.rgb)
        np.testing.assert_array_equal(renderer.render().instance, expected.instance)


def test_box_uv_lets_any_mesh_wear_a_texture_and_materials_vary_without_drift():
    from kp_pose_ros.sim.renderer import with_box_uv

    checker = np.zeros((64, 64, 3), np.uint8)
    checker[:32, :32] = checker[32:, 32:] = 255
    box = with_box_uv(trimesh.creation.box([0.2, 0.2, 0.2]), tile_m=0.05)
    assert box.visual.uv.shape == (len(box.vertices), 2)
    with MeshRenderer(SMALL) as renderer:
        handle = renderer.add_mesh(box, 1, Material(texture=checker))
        renderer.set_pose(handle, _pose(trimesh.transformations.rotation_matrix(0.4, [1, 1, 0])[:3, :3],
                                        (0.0, 0.0, 0.8)))
        renderer.set_lights([Light('directional', direction=(0.1, 0.2, 1.0), intensity=4.0)])
        textured = renderer.render()
        inside = textured.instance == 1
        assert inside.sum() > 2000
        renderer.remove(handle)
        handle = renderer.add_mesh(box, 1, Material(base_color=(0.2, 0.2, 0.2, 1)))  # about the checker's mean
        renderer.set_pose(handle, _pose(trimesh.transformations.rotation_matrix(0.4, [1, 1, 0])[:3, :3],
                                        (0.0, 0.0, 0.8)))
        untextured = renderer.render()
        # The checker shows on every face: far more variation than shading alone gives.
        assert textured.rgb[inside].std() > 3 * untextured.rgb[untextured.instance == 1].std()

        plain = renderer.add_mesh(trimesh.creation.box([0.1, 0.1, 0.1]), 2, Material(base_color=(0.8, 0.8, 0.8, 1)))
        renderer.set_pose(plain, _pose(t=(0.12, 0.0, 0.5)))
        before = renderer.render().rgb[renderer.render().instance == 2].mean()
        for _ in range(3):  # relative to the original material every time: no drift
            renderer.vary_material(plain, tint=(0.3, 0.3, 0.3))
        darker = renderer.render()
        assert darker.rgb[darker.instance == 2].mean() < 0.8 * before
        renderer.vary_material(plain)
        np.testing.assert_allclose(renderer.render().rgb[darker.instance == 2].mean(), before, atol=1.0)
