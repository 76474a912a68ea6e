"""Part fits recover exact poses and sizes, refuse what keypoints cannot determine, are helped by observed points and
by the kinematic chain; the 3D box IoU is exact."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_pose_ros.articulated.categories import ArticulatedInstance, CategoryModel
from kp_pose_ros.articulated.part_fit import PartFitConfig, box_iou_3d, fit_object, fit_part, joint_error
from kp_pose_ros.core.transforms import rotation_error_deg, translation_error
from kp_pose_ros.sim.procedural import articulated_instance

CORNERS = np.array([[-1, -1, -1], [1, 1, -1], [-1, 1, 1]], float)  # three non-collinear box corners


def random_pose(rng, distance=1.5) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    T[:3, 3] = rng.uniform(-0.2, 0.2, 3) + [0.0, 0.0, distance]
    return T


def box_surface(rng, extents, n) -> np.ndarray:
    face, side = rng.integers(0, 3, n), rng.choice([-1.0, 1.0], n)
    points = rng.uniform(-0.5, 0.5, (n, 3)) * extents
    points[np.arange(n), face] = side * extents[face] / 2
    return points


EXTENTS = np.array([0.22, 0.34, 0.012])  # a laptop lid
SCALE = float(np.linalg.norm(EXTENTS))
PROPORTIONS = EXTENTS / SCALE
U = CORNERS * PROPORTIONS / 2


def keypoints_of(T, u=U, scale=SCALE):
    return scale * u @ T[:3, :3].T + T[:3, 3]


def test_similarity_fit_recovers_pose_and_scale():
    rng = np.random.default_rng(1)
    for _ in range(10):
        T = random_pose(rng)
        fit = fit_part(U, keypoints_of(T), np.array([0.9, 1.0, 0.8]))
        assert fit.ok and fit.reason == ''
        assert np.allclose(fit.T_cam_box, T, atol=1e-9) and fit.scale == pytest.approx(SCALE, rel=1e-9)
        assert fit.rms_m < 1e-9 and fit.confidence == pytest.approx(0.9)


def test_noise_gives_proportionate_errors_and_lower_confidence():
    rng = np.random.default_rng(2)
    errors = {}
    for sigma in (0.001, 0.004):
        rot, conf = [], []
        for _ in range(40):
            T = random_pose(rng)
            fit = fit_part(U, keypoints_of(T) + rng.normal(0, sigma, (3, 3)))
            rot.append(rotation_error_deg(fit.T_cam_box, T))
            conf.append(fit.confidence)
        errors[sigma] = (np.mean(rot), np.mean(conf))
    assert errors[0.001][0] < 1.0 and 2.0 < errors[0.004][0] / errors[0.001][0] < 8.0
    assert errors[0.004][1] < errors[0.001][1] <= 1.0


def test_missing_or_degenerate_keypoints_are_refused_with_a_reason():
    kp = keypoints_of(np.eye(4))
    kp[1] = np.nan
    fit = fit_part(U, kp)
    assert not fit.ok and 'only 2 of 3' in fit.reason and np.isnan(fit.T_cam_box).all() and fit.confidence == 0
    assert not fit_part(U, keypoints_of(np.eye(4)), [1.0, 0.0, 1.0]).ok  # a zero score drops the keypoint
    collinear = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]], float)
    fit = fit_part(collinear, collinear)
    assert not fit.ok and 'collinear' in fit.reason
    with pytest.raises(ValueError, match='proportions'):
        fit_part(U, keypoints_of(np.eye(4)), points=np.zeros((10, 3)))


def test_box_points_refine_a_noisy_keypoint_fit():
    rng = np.random.default_rng(3)
    before, after, iou_before, iou_after = [], [], [], []
    for _ in range(20):
        T = random_pose(rng)
        kp = keypoints_of(T) + rng.normal(0, 0.004, (3, 3))
        points = box_surface(rng, EXTENTS, 1500) @ T[:3, :3].T + T[:3, 3]
        plain = fit_part(U, kp)
        refined = fit_part(U, kp, points=points, proportions=PROPORTIONS)
        before.append(rotation_error_deg(plain.T_cam_box, T))
        after.append(rotation_error_deg(refined.T_cam_box, T))
        iou_before.append(box_iou_3d(plain.T_cam_box, plain.scale * PROPORTIONS, T, EXTENTS))
        iou_after.append(box_iou_3d(refined.T_cam_box, refined.scale * PROPORTIONS, T, EXTENTS))
    assert np.mean(after) < 0.8 * np.mean(before)
    assert np.mean(iou_after) > np.mean(iou_before) + 0.05
    fixed = fit_part(U, kp, points=points, proportions=PROPORTIONS, config=PartFitConfig(refine_scale=False))
    assert fixed.refined and fixed.scale == plain.scale


def test_refinement_never_spoils_an_exact_fit_and_ignores_far_outliers():
    rng = np.random.default_rng(4)
    T = random_pose(rng)
    points = box_surface(rng, EXTENTS, 1000) @ T[:3, :3].T + T[:3, 3]
    points[:50] += rng.normal(0, 0.3, (50, 3))  # segmentation bleeding into the background
    fit = fit_part(U, keypoints_of(T), points=points, proportions=PROPORTIONS)
    assert fit.ok and rotation_error_deg(fit.T_cam_box, T) < 0.2 and translation_error(fit.T_cam_box, T) < 0.003


def test_instance_cloud_icp_refines_from_a_partial_view():
    rng = np.random.default_rng(5)
    model = box_surface(rng, EXTENTS, 3000) / SCALE  # normalised part space
    before, after = [], []
    for _ in range(8):
        T = random_pose(rng)
        visible = box_surface(rng, EXTENTS, 800)
        visible = visible[visible[:, 2] > 0] @ T[:3, :3].T + T[:3, 3]
        kp = keypoints_of(T) + rng.normal(0, 0.004, (3, 3))
        before.append(rotation_error_deg(fit_part(U, kp).T_cam_box, T))
        after.append(rotation_error_deg(fit_part(U, kp, points=visible, model_points=model).T_cam_box, T))
    assert np.mean(after) < 0.8 * np.mean(before)


# ------------------------------------------------------------------------------------------- kinematic consistency
def category_setup(category, seed, folder):
    instance = ArticulatedInstance(articulated_instance(category, seed, folder).urdf, category)
    model = CategoryModel.fit(category, [instance])
    for part in model.parts:
        part.keypoints['box'] = CORNERS * part.proportions / 2
    return instance, model


def observe(instance, model, q, T_cam):
    links = T_cam @ instance.link_poses(q)
    local = instance.keypoints(model.keypoints('box'))
    keypoints = np.einsum('pij,pkj->pki', links[:, :3, :3], local) + links[:, None, :3, 3]
    return keypoints, links @ instance.box_offsets()


def random_q(instance, rng):
    return np.array([rng.uniform(j.lower, j.upper) for j in instance.joints])


@pytest.mark.parametrize('category,seed', [('laptop', 7), ('cabinet', 1), ('cabinet', 5), ('cabinet', 2)])
def test_exact_keypoints_recover_every_part_and_joint(category, seed, tmp_path):
    instance, model = category_setup(category, seed, tmp_path)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        q, T_cam = random_q(instance, rng), random_pose(rng)
        keypoints, T_boxes = observe(instance, model, q, T_cam)
        fit = fit_object(model, 'box', keypoints)
        assert fit.ok and fit.located.all() and all(p.ok for p in fit.parts)
        assert np.abs(fit.T_cam_box - T_boxes).max() < 1e-6
        assert np.allclose(fit.scales, [p.scale for p in instance.parts], rtol=1e-6)
        assert np.allclose(fit.extents, [p.extents for p in instance.parts], atol=1e-6)
        assert np.abs(fit.joint_values - q).max() < 1e-6
        assert np.allclose(fit.confidence, 1.0)


@pytest.mark.parametrize('category,seed', [('laptop', 11), ('cabinet', 1), ('cabinet', 5)])
def test_joint_consistency_beats_independent_part_fits_on_noise(category, seed, tmp_path):
    instance, model = category_setup(category, seed, tmp_path)
    rng = np.random.default_rng(seed + 100)
    joint, independent, joint_errors = [], [], []
    types = [j.type for j in model.joints]
    for _ in range(25):
        q, T_cam = random_q(instance, rng), random_pose(rng)
        keypoints, T_boxes = observe(instance, model, q, T_cam)
        fit = fit_object(model, 'box', keypoints + rng.normal(0, 0.002, keypoints.shape))
        joint.append([rotation_error_deg(fit.T_cam_box[k], T_boxes[k]) for k in range(len(T_boxes))])
        independent.append([rotation_error_deg(p.T_cam_box, T_boxes[k]) for k, p in enumerate(fit.parts)])
        joint_errors.append(joint_error(fit.joint_values, q, types))
    assert np.mean(joint) <= np.mean(independent)
    assert np.mean(joint_errors) < np.radians(2.0)


def test_parts_short_of_keypoints_follow_the_chain_or_are_reported(tmp_path):
    instance, model = category_setup('laptop', 7, tmp_path)
    rng = np.random.default_rng(8)
    q, T_cam = random_q(instance, rng), random_pose(rng)
    keypoints, T_boxes = observe(instance, model, q, T_cam)
    two = keypoints.copy()
    two[1, 2] = np.nan  # the lid keeps 2 keypoints: its rotation comes from the base through the hinge
    fit = fit_object(model, 'box', two)
    assert not fit.parts[1].ok and fit.ok
    assert np.abs(fit.T_cam_box - T_boxes).max() < 1e-6 and abs(fit.joint_values[0] - q[0]) < 1e-6
    assert fit.confidence[1] == pytest.approx(2 / 3)
    one = keypoints.copy()
    one[1, 1:] = np.nan
    fit = fit_object(model, 'box', one)
    assert not fit.ok and fit.located.tolist() == [True, False]
    assert np.isnan(fit.T_cam_box[1]).all() and np.isnan(fit.joint_values).all() and fit.confidence[1] == 0
    assert 'rotation' in fit.reasons[1] and np.abs(fit.T_cam_box[0] - T_boxes[0]).max() < 1e-6


def test_a_hidden_cabinet_body_takes_its_rotation_from_a_drawer(tmp_path):
    instance, model = category_setup('cabinet', 1, tmp_path)  # body, drawer_0, door_1, drawer_2
    rng = np.random.default_rng(9)
    q, T_cam = random_q(instance, rng), random_pose(rng)
    keypoints, T_boxes = observe(instance, model, q, T_cam)
    keypoints[0] = np.nan
    fit = fit_object(model, 'box', keypoints)
    assert not fit.located[0] and 'too few' in fit.reasons[0]
    for k in (1, 2, 3):
        assert np.abs(fit.T_cam_box[k] - T_boxes[k]).max() < 1e-6
    assert abs(fit.joint_values[1] - q[1]) < 1e-6  # the door's angle, from the drawer's rotation
    assert np.isnan(fit.joint_values[[0, 2]]).all()  # the drawers' travel needs the body's box


# --------------------------------------------------------------------------------------------------------- metrics
def test_box_iou_3d():
    rng = np.random.default_rng(10)
    T, extents = random_pose(rng), np.array([0.3, 0.2, 0.1])
    assert box_iou_3d(T, extents, T, extents) == pytest.approx(1.0)
    far = T.copy()
    far[:3, 3] += 1.0
    assert box_iou_3d(T, extents, far, extents) == 0.0
    a, b = np.eye(4), np.eye(4)  # axis-aligned, offset by (0.1, 0.05, 0): overlap 0.2 * 0.15 * 0.1
    b[:3, 3] = [0.1, 0.05, 0.0]
    overlap = 0.2 * 0.15 * 0.1
    assert box_iou_3d(a, extents, b, extents) == pytest.approx(overlap / (2 * 0.006 - overlap), rel=1e-9)
    inner = np.array([0.1, 0.1, 0.05])  # nested boxes: the small volume over the large one
    assert box_iou_3d(a, extents, a, inner) == pytest.approx(0.0005 / 0.006, rel=1e-9)
    c = np.eye(4)  # a cube turned 45 degrees about z inside a larger one: the octagonal prism is exact
    c[:3, :3] = Rotation.from_euler('z', 45, degrees=True).as_matrix()
    cube, big = np.full(3, 1.0), np.array([1.2, 1.2, 1.0])
    corner = (np.sqrt(2) / 2 - 0.6) ** 2  # the area of each of the 4 corners of the turned square outside the big one
    inter = 1.0 - 4 * corner
    assert box_iou_3d(c, cube, a, big) == pytest.approx(inter / (1.0 + 1.44 - inter), rel=1e-9)
    for _ in range(20):  # symmetric, in [0, 1]
        Ta, Tb = random_pose(rng), random_pose(rng)
        Tb[:3, 3] = Ta[:3, 3] + rng.normal(0, 0.05, 3)
        ea, eb = rng.uniform(0.05, 0.3, 3), rng.uniform(0.05, 0.3, 3)
        iou = box_iou_3d(Ta, ea, Tb, eb)
        assert 0.0 <= iou <= 1.0 and iou == pytest.approx(box_iou_3d(Tb, eb, Ta, ea), abs=1e-12)


def test_box_iou_3d_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(11)
    for _ in range(3):
        Ta, Tb = random_pose(rng), random_pose(rng)
        Tb[:3, 3] = Ta[:3, 3] + rng.normal(0, 0.03, 3)
        ea, eb = rng.uniform(0.1, 0.3, 3), rng.uniform(0.1, 0.3, 3)
        samples = (rng.uniform(-0.5, 0.5, (400_000, 3)) * ea) @ Ta[:3, :3].T + Ta[:3, 3]
        inside_b = np.all(np.abs((samples - Tb[:3, 3]) @ Tb[:3, :3]) <= eb / 2, axis=1)
        inter = inside_b.mean() * np.prod(ea)
        expected = inter / (np.prod(ea) + np.prod(eb) - inter)
        assert box_iou_3d(Ta, ea, Tb, eb) == pytest.approx(expected, abs=0.005)


def test_joint_error_wraps_angles_and_keeps_metres():
    errors = joint_error([np.pi - 0.01, 0.3], [-np.pi + 0.01, 0.25], ['revolute', 'prismatic'])
    assert np.allclose(errors, [0.02, 0.05])
