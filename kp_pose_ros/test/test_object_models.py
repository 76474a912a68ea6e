"""BOP object models (objects.models): units, box and symmetries from models_info.json, symmetry transforms expanded
as the BOP toolkit does, and on the real LINEMOD-Occluded models that each symmetry maps the model onto itself."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from kp_pose_ros.objects.metrics import add_error, adds_error
from kp_pose_ros.objects.models import ContinuousSymmetry, ObjectModel, load_bop_models

LMO_MODELS = Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'lmo' / 'models_eval'
FLIP_X = [1, 0, 0, 10, 0, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1]  # 180 degrees about x, then 10 mm along x


def write_models(folder: Path, info: dict | None) -> Path:
    """obj_000001 (a box) and obj_000002 (a cylinder about z), in mm, off-centre; `info` as models_info.json."""
    box = trimesh.creation.box(extents=[40.0, 60.0, 80.0])
    box.apply_translation([5.0, 0.0, -3.0])
    cylinder = trimesh.creation.cylinder(radius=20.0, height=50.0, sections=64)
    cylinder.apply_translation([4.0, -6.0, 0.0])
    for obj_id, mesh in ((1, box), (2, cylinder)):
        mesh.export(folder / f'obj_{obj_id:06d}.ply')
    if info is not None:
        (folder / 'models_info.json').write_text(json.dumps(info))
    return folder


def symmetric_info() -> dict:
    return {'1': {'diameter': 110.0, 'min_x': -15.0, 'min_y': -30.0, 'min_z': -43.0,
                  'size_x': 40.0, 'size_y': 60.0, 'size_z': 80.0, 'symmetries_discrete': [FLIP_X]},
            '2': {'diameter': 64.0, 'symmetries_continuous': [{'axis': [0, 0, 1], 'offset': [4.0, -6.0, 0.0]}]}}


def test_models_info_in_metres(tmp_path):
    models = load_bop_models(write_models(tmp_path, symmetric_info()))
    box, cylinder = models[1], models[2]
    assert box.name == 'obj_000001' and box.diameter_m == pytest.approx(0.11)
    np.testing.assert_allclose(box.box_min_m, [-0.015, -0.03, -0.043])
    np.testing.assert_allclose(box.box_size_m, [0.04, 0.06, 0.08])
    np.testing.assert_allclose(box.mesh.bounds, [[-0.015, -0.03, -0.043], [0.025, 0.03, 0.037]], atol=1e-9)
    assert len(box.symmetries_discrete) == 1
    np.testing.assert_allclose(box.symmetries_discrete[0][:3, 3], [0.01, 0.0, 0.0])
    assert cylinder.symmetries_continuous == (ContinuousSymmetry((0.0, 0.0, 1.0), (0.004, -0.006, 0.0)),)
    # no box in its entry: the mesh bounds
    np.testing.assert_allclose(cylinder.box_min_m, cylinder.mesh.bounds[0])
    np.testing.assert_allclose(cylinder.box_size_m, cylinder.mesh.extents)
    assert box.symmetric and cylinder.symmetric


def test_without_models_info(tmp_path):
    models = load_bop_models(write_models(tmp_path, None), [1])
    assert list(models) == [1]
    box = models[1]
    assert not box.symmetric and box.symmetries_discrete == () and box.symmetries_continuous == ()
    assert box.diameter_m == pytest.approx(np.linalg.norm([0.04, 0.06, 0.08]))
    np.testing.assert_allclose(box.box_size_m, [0.04, 0.06, 0.08])
    np.testing.assert_array_equal(box.symmetry_transforms(), np.eye(4)[None])


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match='obj_XXXXXX.ply'):
        load_bop_models(tmp_path)
    write_models(tmp_path, {'1': {'diameter': 'wide'}})
    with pytest.raises(ValueError, match='models_info.json'):
        load_bop_models(tmp_path)
    with pytest.raises(ValueError, match=r'objects \[7\]'):
        load_bop_models(tmp_path, [2, 7])


def test_constructed_directly_and_frozen():
    mesh = trimesh.creation.box(extents=[0.1, 0.2, 0.3])
    model = ObjectModel(3, mesh, 0.37, mesh.convex_hull)
    assert not model.symmetric
    np.testing.assert_allclose(model.box_min_m, [-0.05, -0.1, -0.15])
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.diameter_m = 1.0
    with pytest.raises(ValueError):
        model.box_size_m[0] = 1.0  # read-only array
    with pytest.raises(ValueError, match='homogeneous'):
        ObjectModel(3, mesh, 0.37, mesh.convex_hull, symmetries_discrete=(np.ones((4, 4)),))


def test_symmetry_transforms_as_bop_toolkit():
    """Discrete (with identity) x discretised continuous, continuous applied after discrete: T = C_k @ D_j."""
    mesh = trimesh.creation.cylinder(radius=0.02, height=0.05)
    D = np.array(FLIP_X, float).reshape(4, 4)
    D[:3, 3] /= 1000.0
    offset = np.array([0.004, -0.006, 0.0])
    model = ObjectModel(2, mesh, 0.064, mesh.convex_hull, (D,), (ContinuousSymmetry((0.0, 0.0, 2.0), offset),))
    transforms = model.symmetry_transforms(continuous_steps=4)
    assert transforms.shape == (8, 4, 4)
    np.testing.assert_allclose(transforms[0], np.eye(4), atol=1e-12)
    for j, Dj in enumerate([np.eye(4), D]):
        for k in range(4):
            C = np.eye(4)
            C[:3, :3] = Rotation.from_euler('z', 90.0 * k, degrees=True).as_matrix()
            C[:3, 3] = offset - C[:3, :3] @ offset  # rotation about the axis through `offset`
            np.testing.assert_allclose(transforms[4 * j + k], C @ Dj, atol=1e-12)
    assert model.symmetry_transforms().shape == (72, 4, 4)
    only_discrete = ObjectModel(1, mesh, 0.064, mesh.convex_hull, (D,))
    np.testing.assert_allclose(only_discrete.symmetry_transforms(), [np.eye(4), D])
    with pytest.raises(ValueError, match='continuous_steps'):
        model.symmetry_transforms(0)


def test_continuous_symmetry_maps_an_offset_cylinder_onto_itself(tmp_path):
    cylinder = load_bop_models(write_models(tmp_path, symmetric_info()))[2]
    points, _ = trimesh.sample.sample_surface(cylinder.mesh, 3000, seed=np.random.default_rng(0))
    for T in cylinder.symmetry_transforms(continuous_steps=12):
        assert adds_error(points, T, np.eye(4)) < 0.002  # the sampling's spacing
    assert add_error(points, cylinder.symmetry_transforms(2)[1], np.eye(4)) > 0.02


def test_objects_models_does_not_import_the_simulator():
    code = ('import sys, kp_pose_ros.objects.models; '
            'bad = [m for m in sys.modules if m == "pybullet" or m.startswith("kp_pose_ros.sim")]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.skipif(not LMO_MODELS.is_dir(), reason=f'LINEMOD-Occluded models not found at {LMO_MODELS} '
                                                    '(../shared/data is only on the development machines)')
def test_lmo_symmetries_map_the_models_onto_themselves():
    models = load_bop_models(LMO_MODELS)
    assert {k for k, m in models.items() if m.symmetric} == {10, 11}  # eggbox, glue
    for obj_id in (10, 11):
        model = models[obj_id]
        transforms = model.symmetry_transforms()
        assert len(transforms) == 2
        vertices = model.mesh.vertices
        for T in transforms:
            assert adds_error(vertices, T, np.eye(4)) < 0.004
        # the symmetry is no small motion: ADD, blind to it, calls it a large error
        assert add_error(vertices, transforms[1], np.eye(4)) > 0.2 * model.diameter_m
