"""Object keypoint sets (objects.keypoints): farthest-point keypoints lie on the surface, spread out and are
reproducible; box keypoints are the box corners and centre; the YAML file round-trips and fails loudly."""
import numpy as np
import pytest
import trimesh
import yaml
from scipy.spatial.distance import pdist

from kp_pose_ros.objects.keypoints import ObjectKeypoints, box_corner_keypoints, farthest_point_keypoints
from kp_pose_ros.objects.models import ObjectModel


def model(obj_id: int, mesh: trimesh.Trimesh) -> ObjectModel:
    return ObjectModel(obj_id, mesh, float(np.linalg.norm(mesh.extents)), mesh.convex_hull)


@pytest.fixture
def models():
    box = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    box.apply_translation([0.01, 0.02, -0.03])
    return {2: model(2, box), 1: model(1, trimesh.creation.icosphere(radius=0.04))}


def test_farthest_points_on_the_surface_and_spread():
    cube = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    points = farthest_point_keypoints(cube, count=8, seed=0)
    assert points.shape == (8, 3)
    np.testing.assert_allclose(np.abs(points).max(axis=1), 0.05)  # each on a face of the cube
    assert pdist(points).min() > 0.06  # random surface points of a 0.1 m cube come far closer
    samples, _ = trimesh.sample.sample_surface(cube, 5000, seed=np.random.default_rng(0))
    first = np.linalg.norm(samples - samples.mean(axis=0), axis=1).max()
    assert np.linalg.norm(points[0] - samples.mean(axis=0)) == pytest.approx(first)


def test_farthest_points_are_reproducible():
    sphere = trimesh.creation.icosphere(radius=0.05)
    a = farthest_point_keypoints(sphere, count=6, seed=3)
    np.testing.assert_array_equal(a, farthest_point_keypoints(sphere, count=6, seed=3))
    assert not np.allclose(a, farthest_point_keypoints(sphere, count=6, seed=4))
    np.testing.assert_array_equal(a[:4], farthest_point_keypoints(sphere, count=4, seed=3))
    with pytest.raises(ValueError, match='count'):
        farthest_point_keypoints(sphere, count=10, samples=5)


def test_box_corners_and_centre():
    mesh = trimesh.creation.box(extents=[0.02, 0.04, 0.06])
    mesh.apply_translation([0.1, 0.0, -0.2])
    points = box_corner_keypoints(mesh)
    assert points.shape == (9, 3)
    expected = {(x, y, z) for x in (0.09, 0.11) for y in (-0.02, 0.02) for z in (-0.23, -0.17)}
    assert {tuple(np.round(p, 6)) for p in points[:8]} == expected
    np.testing.assert_allclose(points[8], [0.1, 0.0, -0.2], atol=1e-12)


def test_for_models(models):
    fps = ObjectKeypoints.for_models(models, 'fps', count=5, seed=1)
    assert fps.kind == 'fps' and list(fps.points) == [1, 2]
    np.testing.assert_array_equal(fps.points[2], farthest_point_keypoints(models[2].mesh, 5, 1))
    box = ObjectKeypoints.for_models(models, 'box')
    assert box.kind == 'box' and all(p.shape == (9, 3) for p in box.points.values())
    with pytest.raises(ValueError, match='kind'):
        ObjectKeypoints.for_models(models, 'corners')


def test_yaml_round_trip(models, tmp_path):
    keypoints = ObjectKeypoints.for_models(models, 'fps', count=8, seed=0)
    path = tmp_path / 'set_keypoints.yaml'
    keypoints.save(path)
    data = yaml.safe_load(path.read_text())
    assert data['kind'] == 'fps' and data['units'] == 'm'
    assert [(o['obj_id'], o['name']) for o in data['objects']] == [(1, 'obj_000001'), (2, 'obj_000002')]
    assert all(len(str(v).split('.')[-1]) <= 6 for o in data['objects'] for row in o['points'] for v in row)
    loaded = ObjectKeypoints.load(path)
    assert loaded.kind == 'fps' and list(loaded.points) == [1, 2]
    for obj_id, points in keypoints.points.items():
        np.testing.assert_allclose(loaded.points[obj_id], points, atol=5e-7)


@pytest.mark.parametrize('text, match', [
    ('kind: fps\n', 'objects'),
    ('kind: sift\nobjects: []\n', 'kind'),
    ('kind: fps\nunits: mm\nobjects: []\n', 'units'),
    ('kind: fps\nobjects:\n- {obj_id: 1, points: [[0, 0]]}\n', r'\(K, 3\)'),
    ('kind: box\nobjects:\n- {obj_id: 1, points: [[0, 0, 0]]}\n- {obj_id: 1, points: [[0, 0, 1]]}\n', 'twice'),
    ('- just a list\n', 'not an object keypoints file'),
])
def test_bad_files(tmp_path, text, match):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as error:
        ObjectKeypoints.load(path)
    assert 'bad.yaml' in str(error.value)
