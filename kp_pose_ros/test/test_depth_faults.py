"""Depth alignment and the RGB-D fitter on real sensor faults: a depth scale error, flying pixels, holes."""
from dataclasses import replace

import numpy as np
import pytest
from test_depth_alignment import pose_error

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.robot.depth_alignment import depth_view, projected_bounds
from kp_pose_ros.robot.depth_fit import DepthFitConfig, RobotDepthFitter
from kp_pose_ros.sim.depth_sensors import StereoDepthModel
from kp_pose_ros.sim.scene import SceneConfig, SimScene


@pytest.fixture(scope='module')
def fitters(panda):
    kin, surface = panda
    return RobotDepthFitter(surface, kin), RobotDepthFitter(surface, kin, DepthFitConfig(estimate_scale=False))


@pytest.fixture(scope='module')
def frame():
    """The arm 1.2 m away, exact depth; the tests put a D435's faults on it."""
    with SimScene(SceneConfig(), seed=4244) as scene:
        scene.set_joint_positions(scene.sample_joint_positions())
        return scene.render()


def d435(frame, seed, **unit):
    """A D435 unit's depth of the frame: z^2 noise, holes (dark, specular, grazing, shadows), flying pixels."""
    model = replace(StereoDepthModel(), **unit)
    return model.apply(frame.depth_m, frame.camera, np.random.default_rng(seed), rgb=frame.rgb).depth_m


def keypoints(frame):
    return np.where(frame.visible[:, None], frame.keypoints_px, np.nan)


def test_depth_scale_is_estimated_with_the_pose(fitters, frame):
    """A unit whose depth reads 2 % long: blind to it, the fit puts the camera 2 cm off; estimating it (measured
    on this frame over three noise draws: 1.0174-1.0179, 2.4-3.9 mm, 0.09-0.23 deg) or knowing it, millimetres."""
    estimating, blind = fitters
    depth = d435(frame, 0, scale_bias=0.02)
    aligned = estimating.fit(depth, frame.camera, frame.joint_positions, keypoints(frame))
    assert aligned.success, aligned.message
    assert aligned.depth_scale == pytest.approx(1.02, abs=0.006)
    t_err, r_err = pose_error(aligned.T_cam_base, frame)
    assert t_err < 0.007 and r_err < 0.5, (t_err, r_err)
    assert pose_error(blind.fit(depth, frame.camera, frame.joint_positions, keypoints(frame)).T_cam_base,
                      frame)[0] > 0.015
    known = blind.fit(depth, frame.camera, frame.joint_positions, keypoints(frame), depth_scale=1.02)
    assert known.success and known.depth_scale == 1.02
    t_err, r_err = pose_error(known.T_cam_base, frame)
    assert t_err < 0.007 and r_err < 0.5, (t_err, r_err)
    with pytest.raises(ValueError, match='depth_scale'):
        estimating.fit(depth, frame.camera, frame.joint_positions, keypoints(frame), depth_scale=0.0)


def test_flying_pixels_at_a_step_edge_are_dropped():
    """A box 0.8 m away on a wall at 1 m, with a 2-pixel fringe of depths between the two around its outline."""
    camera = CameraModel.from_fov(64, 48, 60.0)
    depth = np.full((48, 64), 1.0)
    depth[14:34, 20:44] = 0.8
    fringe = np.zeros(depth.shape, bool)
    fringe[12:36, 18:46] = True
    fringe[16:32, 22:42] = False
    depth[fringe] = np.random.default_rng(0).uniform(0.82, 0.98, fringe.sum())
    view = depth_view(depth, camera, stride=1)
    z = view.cloud[:, 2]
    assert not np.any((z > 0.81) & (z < 0.99)), np.sort(z[(z > 0.81) & (z < 0.99)])
    # Away from the edge both surfaces stay: of the box's 16 x 20 pixels, all but the 2 px dropped along the edge
    # and the 2 px more whose normal would span it.
    assert np.sum(z < 0.81) == 8 * 12 and np.sum(z > 0.99) > 1000


def test_fit_survives_a_quarter_of_the_depth_missing(fitters, frame):
    """25 % random holes on top of the D435's own: points on them are not counted, so the coverage stays."""
    estimating, _ = fitters
    depth = d435(frame, 1)
    whole = estimating.fit(depth, frame.camera, frame.joint_positions, keypoints(frame))
    depth[np.random.default_rng(2).random(depth.shape) < 0.25] = np.nan
    holed = estimating.fit(depth, frame.camera, frame.joint_positions, keypoints(frame))
    assert whole.success and holed.success, holed.message
    assert holed.coverage > whole.coverage - 0.05, (holed.coverage, whole.coverage)
    t_err, r_err = pose_error(holed.T_cam_base, frame)
    assert t_err < 0.007 and r_err < 0.5, (t_err, r_err)
    assert holed.depth_scale == pytest.approx(1.0, abs=0.006)


def test_region_of_interest_view_is_the_full_view_there():
    """A view limited to a region (tracking) holds exactly the full view's points and normals inside it, none
    outside, so ICP against it matches what it would against the full image where the robot is."""
    camera = CameraModel.from_fov(640, 480, 70.0)
    rng = np.random.default_rng(3)
    depth = 1.5 + 0.05 * np.sin(np.arange(640) / 40.0)[None, :] + rng.normal(0, 0.002, (480, 640))
    depth[200:260, 300:380] = 1.0  # a box in front: depth edges inside the region
    full, roi = depth_view(depth, camera), (251, 151, 451, 331)
    part = depth_view(depth, camera, roi=roi)
    inside = np.zeros((480, 640), bool)
    inside[150:331, 250:451] = True  # the start snapped onto the stride-2 grid
    np.testing.assert_array_equal(np.isnan(part.points[~inside]), True)
    margin = np.zeros_like(inside)
    margin[160:321, 260:441] = True  # away from the region's border, where filters see the same neighbourhood
    np.testing.assert_allclose(part.points[margin], full.points[margin], equal_nan=True)
    in_full = {tuple(p) for p in np.round(full.cloud, 9)}
    assert all(tuple(p) in in_full for p in np.round(part.cloud[np.all(np.isfinite(part.cloud), axis=1)], 9)[::50])
    # Bounds of projected points, grown and clipped; none in front of the camera: the whole image.
    points = np.array([[0.0, 0.0, 1.0], [0.1, 0.05, 1.0], [5.0, 0.0, 1.0]])
    u0, v0, u1, v1 = projected_bounds(points, camera, 10)
    assert u1 == 640 and v0 < camera.cy < v1 and u0 <= camera.cx - 10
    assert projected_bounds(-points, camera, 10) == (0, 0, 640, 480)
