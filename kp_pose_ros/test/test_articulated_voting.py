"""3D radius voting (PAGE proposal integration scoring) on synthetic spheres with known centres."""
import numpy as np
import pytest
from scipy.spatial import Delaunay
from scipy.spatial.transform import Rotation

from kp_pose_ros.articulated.voting import VoteResult, VotingConfig, vote_keypoints
from kp_pose_ros.core.transforms import make_transform, transform_points


def _surface(rng, n):
    """n points on a bumpy patch about 20 cm across, 0.8 m in front of the camera."""
    uv = rng.uniform(-0.1, 0.1, size=(n, 2))
    return np.column_stack([uv, _height(uv)])


def _height(uv):
    return 0.8 + 0.03 * np.sin(20 * uv[:, 0]) + 0.02 * np.cos(15 * uv[:, 1]) + 0.5 * (uv ** 2).sum(axis=1)


def _keypoints_off_surface(rng, k):
    """k keypoints over the patch, 3-12 cm in front of or behind it: off the surface, mostly outside its convex hull."""
    uv = rng.uniform(-0.1, 0.1, size=(k, 2))
    offset = rng.uniform(0.03, 0.12, size=k) * rng.choice([-1.0, 1.0], size=k)
    return np.column_stack([uv, _height(uv) + offset])


def _radii(points, keypoints):
    return np.linalg.norm(points[:, None, :] - keypoints[None, :, :], axis=2)


def _brute_force_scores(centres, points, radii, weights, rho):
    """Weighted share of the voters within rho of their sphere at each centre: (M, K) for centres (M, 3)."""
    distance = np.linalg.norm(centres[:, None, :] - points[None, :, :], axis=2)  # (M, N)
    return np.stack([(np.abs(distance - r) <= rho) @ w / w.sum() for r, w in zip(radii.T, weights.T)], axis=1)


def _lattice_cells(lo, hi, rho):
    """Centres rho * (i + 1/2) of every rho-cell that meets the box [lo, hi]."""
    axes = [(np.arange(np.floor(a / rho), np.ceil(b / rho)) + 0.5) * rho for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1).reshape(-1, 3)


def _assert_empty_rows(result: VoteResult, rows):
    assert np.all(np.isnan(result.keypoints[rows])) and np.all(np.isnan(result.cells[rows]))
    assert np.all(result.scores[rows] == 0) and np.all(result.inliers[rows] == 0)


@pytest.mark.parametrize('k, seed', [(1, 11), (6, 12), (12, 13)])
def test_exact_radii_recover_keypoints_outside_the_hull(k, seed):
    rng = np.random.default_rng(seed)
    points = _surface(rng, 2048)
    truth = _keypoints_off_surface(rng, k)
    assert np.all(Delaunay(points).find_simplex(truth) < 0)
    result = vote_keypoints(points, _radii(points, truth))
    assert result.keypoints.shape == (k, 3) and result.keypoints.dtype == np.float64
    np.testing.assert_allclose(result.keypoints, truth, rtol=0, atol=1e-6)
    # Exact spheres all pass through the cell holding their centre, so the best cell has every vote.
    np.testing.assert_array_equal(result.scores, 1.0)
    np.testing.assert_array_equal(result.inliers, 2048)
    assert np.all(np.linalg.norm(result.cells - truth, axis=1) <= 3 * VotingConfig().rho_m)


def test_noisy_radii_with_outliers_peak_at_the_truth():
    rng = np.random.default_rng(21)
    points = _surface(rng, 2048)
    truth = _keypoints_off_surface(rng, 12)
    radii = _radii(points, truth) + rng.normal(0.0, 0.002, size=(2048, 12))
    outlier = rng.random((2048, 12)) < 0.3
    radii[outlier] = rng.uniform(0.0, 0.3, size=outlier.sum())
    result = vote_keypoints(points, radii)
    assert np.all(np.linalg.norm(result.keypoints - truth, axis=1) < 0.002)
    # About 70 % of the voters are inliers and nearly all of them (sigma 2 mm) lie within rho = 5 mm of the cell.
    inlier_share = 1.0 - outlier.mean(axis=0)
    assert np.all(result.scores <= inlier_share + 0.03) and np.all(result.scores >= 0.85 * inlier_share)
    assert np.all(np.abs(result.inliers / 2048 - inlier_share) < 0.1)


def test_scores_equal_brute_force_over_the_dense_grid():
    """A small case against a dense grid of rho-cells: the chosen cell's score is its brute-force count, and with a beam
    that prunes nothing the search finds the grid's best cell. The default beam may settle for a cell a few votes
    short of it (a near-tie beside the peak), whose refined keypoint is a fraction of a millimetre from the best's."""
    rng = np.random.default_rng(31)
    rho, n = 0.01, 100
    points = rng.uniform(-0.025, 0.025, size=(n, 3)) + [0.1, -0.05, 0.7]
    truth = points.mean(axis=0) + rng.uniform(-0.06, 0.06, size=(3, 3))
    radii = np.abs(_radii(points, truth) + rng.normal(0.0, 0.003, size=(n, 3)))  # a negative radius would abstain
    outlier = rng.random((n, 3)) < 0.25
    radii[outlier] = rng.uniform(0.0, 0.1, size=outlier.sum())
    # Every sphere lies in the points' box grown by the largest radius: cells further out than rho get no vote.
    grow = radii.max() + rho
    cells = _lattice_cells(points.min(axis=0) - grow, points.max(axis=0) + grow, rho)
    for weights in (np.ones((n, 3)), rng.uniform(0.2, 1.0, size=(n, 3))):
        best = _brute_force_scores(cells, points, radii, weights, rho).max(axis=0)
        exhaustive = vote_keypoints(points, radii, weights, VotingConfig(rho_m=rho, beam=10 ** 6))
        np.testing.assert_allclose(exhaustive.scores, best, rtol=0, atol=1e-12)
        result = vote_keypoints(points, radii, weights, VotingConfig(rho_m=rho))
        np.testing.assert_allclose(result.cells / rho - 0.5, np.round(result.cells / rho - 0.5), rtol=0, atol=1e-9)
        there = np.diag(_brute_force_scores(result.cells, points, radii, weights, rho))
        np.testing.assert_allclose(result.scores, there, rtol=0, atol=1e-12)
        np.testing.assert_allclose(result.keypoints, exhaustive.keypoints, rtol=0, atol=rho / 20)
        assert np.all(np.linalg.norm(result.keypoints - truth, axis=1) < rho)


@pytest.mark.parametrize('noise', [0.0, 0.001])
def test_result_moves_rigidly_with_the_input(noise):
    rng = np.random.default_rng(41)
    points = _surface(rng, 1024)
    truth = _keypoints_off_surface(rng, 6)
    radii = _radii(points, truth) + rng.normal(0.0, noise, size=(1024, 6))
    T = make_transform(Rotation.random(random_state=rng).as_matrix(), rng.uniform(-1.0, 1.0, 3))
    before = vote_keypoints(points, radii)
    after = vote_keypoints(transform_points(T, points), radii)
    np.testing.assert_allclose(after.keypoints, transform_points(T, before.keypoints), rtol=0, atol=1e-6)
    assert np.all(np.abs(after.scores - before.scores) < 0.05)


def test_weights_choose_between_two_centres():
    """60 % of the points vote for a, 40 % for b: a wins, unless the weights favour b's voters."""
    rng = np.random.default_rng(51)
    points = _surface(rng, 500)
    a, b = _keypoints_off_surface(rng, 2)
    for_b = np.arange(500) >= 300
    radii = np.where(for_b, np.linalg.norm(points - b, axis=1), np.linalg.norm(points - a, axis=1))[:, None]
    unweighted = vote_keypoints(points, radii)
    np.testing.assert_allclose(unweighted.keypoints[0], a, atol=1e-6)
    weights = np.where(for_b, 2.0, 1.0)
    weighted = vote_keypoints(points, radii, weights)
    np.testing.assert_allclose(weighted.keypoints[0], b, atol=1e-6)
    # b's voters, and the few of a's whose spheres pass within rho of b.
    assert 400 / 700 <= weighted.scores[0] < 0.65 and 200 <= weighted.inliers[0] < 230
    per_keypoint = vote_keypoints(points, radii, weights[:, None])
    np.testing.assert_array_equal(per_keypoint.keypoints, weighted.keypoints)


def test_abstaining_voters_are_ignored():
    """NaN, infinite or negative radii, points with a NaN coordinate and zero weights leave the others' answer."""
    rng = np.random.default_rng(61)
    points = _surface(rng, 600)
    truth = _keypoints_off_surface(rng, 3)
    radii = _radii(points, truth)
    points[:50, 1] = np.nan
    radii[50:100, 0] = np.nan
    radii[100:150, 1] = -1.0
    radii[150:200, 2] = np.inf
    weights = np.ones((600, 3))
    weights[200:250] = 0.0
    radii[200:250] = 7.0  # would be wrong, but their weight is 0
    result = vote_keypoints(points, radii, weights)
    np.testing.assert_allclose(result.keypoints, truth, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.scores, 1.0)
    np.testing.assert_array_equal(result.inliers, 450)  # 600 less 50 NaN points, 50 abstaining, 50 weighing 0


def test_degenerate_inputs_give_nan_rows():
    rng = np.random.default_rng(71)
    points = _surface(rng, 200)
    truth = _keypoints_off_surface(rng, 3)
    radii = _radii(points, truth)
    _assert_empty_rows(vote_keypoints(np.zeros((0, 3)), np.zeros((0, 3))), slice(None))
    _assert_empty_rows(vote_keypoints(points, np.full((200, 3), np.nan)), slice(None))
    _assert_empty_rows(vote_keypoints(points[:1], radii[:1]), slice(None))
    _assert_empty_rows(vote_keypoints(points[:3], radii[:3]), slice(None))  # three spheres meet in two points
    _assert_empty_rows(vote_keypoints(np.full((200, 3), np.nan), radii), slice(None))
    _assert_empty_rows(vote_keypoints(points, radii, np.zeros(200)), slice(None))
    empty = vote_keypoints(points, np.zeros((200, 0)))
    assert empty.keypoints.shape == (0, 3) and empty.scores.shape == (0,) and empty.inliers.shape == (0,)
    # One keypoint without voters leaves the others alone.
    weights = np.ones((200, 3))
    weights[:, 1] = 0.0
    result = vote_keypoints(points, radii, weights)
    _assert_empty_rows(result, [1])
    np.testing.assert_allclose(result.keypoints[[0, 2]], truth[[0, 2]], rtol=0, atol=1e-6)


def test_collinear_voters_do_not_determine_a_keypoint():
    """Spheres centred on one line meet in a circle about it: no point to report."""
    line = np.column_stack([np.linspace(-0.1, 0.1, 50), np.zeros(50), np.full(50, 0.8)])
    radii = _radii(line, np.array([[0.02, 0.05, 0.85]]))
    _assert_empty_rows(vote_keypoints(line, radii), slice(None))


@pytest.mark.parametrize('points, radii, weights', [
    (np.zeros((5, 2)), np.zeros((5, 1)), None),
    (np.zeros(5), np.zeros((5, 1)), None),
    (np.zeros((5, 3)), np.zeros(5), None),
    (np.zeros((5, 3)), np.zeros((4, 1)), None),
    (np.zeros((5, 3)), np.zeros((5, 2)), np.ones(4)),
    (np.zeros((5, 3)), np.zeros((5, 2)), np.ones((5, 3))),
    (np.zeros((5, 3)), np.zeros((5, 2)), -np.ones(5)),
    (np.zeros((5, 3)), np.zeros((5, 2)), np.full(5, np.nan)),
])
def test_wrong_shapes_and_weights_are_refused(points, radii, weights):
    with pytest.raises(ValueError):
        vote_keypoints(points, radii, weights)


@pytest.mark.parametrize('field, value', [
    ('rho_m', 0.0), ('rho_m', np.nan), ('coarse_cells', 1), ('beam', 0), ('coarse_voters', 0), ('min_voters', 0),
    ('refine_iterations', -1), ('refine_radius_rho', 0.5), ('beam', 2.5),
])
def test_invalid_config_is_refused(field, value):
    with pytest.raises(ValueError):
        VotingConfig(**{field: value})
