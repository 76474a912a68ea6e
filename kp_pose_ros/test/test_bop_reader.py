"""BOP dataset reader (objects.bop): a hand-written folder read field by field, errors that name the file, and the
real LINEMOD-Occluded test images, whose ground-truth poses must put each model on its visible box."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from kp_pose_ros.objects.bop import BopDataset
from kp_pose_ros.objects.keypoints import box_corner_keypoints
from kp_pose_ros.objects.models import load_bop_models

LMO = Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'lmo'
R_90Z = [0, -1, 0, 1, 0, 0, 0, 0, 1]


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_dataset(root: Path, targets: bool = True) -> Path:
    """camera.json, models/, test/000001 (images 0 and 5: rgb, depth) and test/000002 (image 1: gray, no depth,
    no scene_gt_info.json)."""
    write_json(root / 'camera.json', {'width': 8, 'height': 6, 'fx': 100.0, 'fy': 101.0, 'cx': 3.5, 'cy': 2.5,
                                      'depth_scale': 0.1})
    write_json(root / 'models' / 'models_info.json', {'1': {'diameter': 17.3}})
    trimesh.creation.box(extents=[10, 10, 10]).export(root / 'models' / 'obj_000001.ply')
    scene = root / 'test' / '000001'
    K = [200.0, 0, 3.5, 0, 201.0, 2.5, 0, 0, 1]
    write_json(scene / 'scene_camera.json', {'0': {'cam_K': K, 'depth_scale': 0.5}, '5': {'cam_K': K}})
    write_json(scene / 'scene_gt.json', {
        '0': [{'obj_id': 1, 'cam_R_m2c': R_90Z, 'cam_t_m2c': [10.0, -20.0, 500.0]},
              {'obj_id': 3, 'cam_R_m2c': np.eye(3).ravel().tolist(), 'cam_t_m2c': [0.0, 0.0, 900.0]}],
        '5': [{'obj_id': 3, 'cam_R_m2c': np.eye(3).ravel().tolist(), 'cam_t_m2c': [0.0, 0.0, 700.0]}]})
    write_json(scene / 'scene_gt_info.json', {
        '0': [{'bbox_visib': [1, 2, 3, 4], 'visib_fract': 0.75}, {'bbox_visib': [-1, -1, -1, -1], 'visib_fract': 0.0}],
        '5': [{'bbox_visib': [0, 0, 8, 6], 'visib_fract': 1.0}]})
    (scene / 'rgb').mkdir()
    (scene / 'depth').mkdir()
    for im_id in (0, 5):
        bgr = np.zeros((6, 8, 3), np.uint8)
        bgr[..., 0], bgr[..., 2] = 200, 10 + im_id  # blue 200, red 10 + im_id
        cv2.imwrite(str(scene / 'rgb' / f'{im_id:06d}.png'), bgr)
        depth = np.full((6, 8), 2000 + im_id, np.uint16)
        depth[0, 0] = 0
        cv2.imwrite(str(scene / 'depth' / f'{im_id:06d}.png'), depth)
    gray_scene = root / 'test' / '000002'
    write_json(gray_scene / 'scene_camera.json', {'1': {'cam_K': K}})
    write_json(gray_scene / 'scene_gt.json', {'1': [{'obj_id': 1, 'cam_R_m2c': R_90Z, 'cam_t_m2c': [0, 0, 300]}]})
    (gray_scene / 'gray').mkdir()
    cv2.imwrite(str(gray_scene / 'gray' / '000001.jpg'), np.full((6, 8), 77, np.uint8))
    if targets:
        write_json(root / 'test_targets_bop19.json', [
            {'scene_id': 1, 'im_id': 0, 'obj_id': 1, 'inst_count': 1},
            {'scene_id': 2, 'im_id': 1, 'obj_id': 1, 'inst_count': 1},
            {'scene_id': 9, 'im_id': 4, 'obj_id': 1, 'inst_count': 1}])  # an image not in this copy
    return root


@pytest.fixture
def root(tmp_path):
    return write_dataset(tmp_path / 'bop')


def test_reads_every_field(root):
    dataset = BopDataset(root, targets=False)
    assert dataset.models_dir == root / 'models'
    assert (dataset.camera.width, dataset.camera.height, dataset.camera.fy) == (8, 6, 101.0)
    assert dataset.depth_scale == 0.1
    frames = list(dataset.frames())
    assert [(f.scene_id, f.im_id) for f in frames] == [(1, 0), (1, 5), (2, 1)]
    first, second, gray = frames
    np.testing.assert_array_equal(first.K, [[200, 0, 3.5], [0, 201, 2.5], [0, 0, 1]])
    assert (first.depth_scale, second.depth_scale) == (0.5, 0.1)  # its own, else camera.json's
    assert first.rgb_path == root / 'test' / '000001' / 'rgb' / '000000.png'
    assert first.depth_path == root / 'test' / '000001' / 'depth' / '000000.png'
    assert [gt.obj_id for gt in first.gts] == [1, 3]
    T = first.gts[0].T_cam_obj
    np.testing.assert_allclose(T[:3, :3], np.reshape(R_90Z, (3, 3)))
    np.testing.assert_allclose(T[:3, 3], [0.01, -0.02, 0.5])
    np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
    assert (first.gts[0].bbox_visib, first.gts[0].visib_fract) == ((1, 2, 3, 4), 0.75)
    assert (first.gts[1].bbox_visib, first.gts[1].visib_fract) == (None, 0.0)  # nothing visible
    assert gray.rgb_path.name == '000001.jpg' and gray.depth_path is None
    assert (gray.gts[0].bbox_visib, gray.gts[0].visib_fract) == (None, None)  # no scene_gt_info.json


def test_images_in_metres_and_rgb(root):
    dataset = BopDataset(root, targets=False)
    first, second, gray = dataset.frames()
    rgb = dataset.load_rgb(second)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 8, 3)
    np.testing.assert_array_equal(rgb[2, 3], [15, 0, 200])
    depth = dataset.load_depth(first)
    assert depth.dtype == np.float32 and depth.shape == (6, 8)
    assert np.isnan(depth[0, 0]) and np.isfinite(depth).sum() == 47
    assert depth[3, 3] == pytest.approx(2000 * 0.5 / 1000.0)  # 2000 units of 0.5 mm
    assert dataset.load_depth(second)[1, 1] == pytest.approx(2005 * 0.1 / 1000.0, rel=1e-6)
    np.testing.assert_array_equal(dataset.load_rgb(gray)[0, 0], [77, 77, 77])
    with pytest.raises(FileNotFoundError, match='no depth image'):
        dataset.load_depth(gray)


def test_targets_restrict_images_and_objects(root):
    frames = list(BopDataset(root).frames())
    assert [(f.scene_id, f.im_id) for f in frames] == [(1, 0), (2, 1)]
    assert [gt.obj_id for gt in frames[0].gts] == [1]  # object 3 is no target
    assert len(list(BopDataset(write_dataset(root.parent / 'no_targets', targets=False)).frames())) == 3
    (root / 'test').rename(root / 'train_pbr')  # the targets are test images: another split ignores them
    assert len(list(BopDataset(root, split='train_pbr').frames())) == 3


def break_file(root: Path, name: str) -> None:
    path = root / name
    if name in ('camera.json', 'models/models_info.json', 'test/000001/rgb/000000.png'):
        path.unlink()
    elif name == 'test/000001/scene_gt.json':
        write_json(path, {'0': [{'obj_id': 1, 'cam_R_m2c': [1, 0, 0], 'cam_t_m2c': [0, 0, 1]}]})
    elif name == 'test/000001/scene_camera.json':
        path.write_text('{"0": ')
    elif name == 'test/000002/scene_gt.json':
        write_json(path, [{'obj_id': 1}])
    elif name == 'test/000001/scene_gt_info.json':
        write_json(path, {'0': [{'bbox_visib': [1, 2, 3, 4], 'visib_fract': 0.5}], '5': []})


@pytest.mark.parametrize('name, error, named', [
    ('camera.json', FileNotFoundError, 'camera.json'),
    ('models/models_info.json', FileNotFoundError, ''),  # neither models_eval/ nor models/ in the root
    ('test/000001/scene_gt.json', ValueError, 'test/000001/scene_gt.json'),
    ('test/000001/scene_camera.json', ValueError, 'test/000001/scene_camera.json'),
    ('test/000002/scene_gt.json', ValueError, 'test/000002/scene_gt.json'),
    ('test/000001/scene_gt_info.json', ValueError, 'test/000001/scene_gt_info.json'),
    ('test/000001/rgb/000000.png', FileNotFoundError, 'test/000001/rgb'),
])
def test_malformed_folders_name_the_file(root, name, error, named):
    break_file(root, name)
    with pytest.raises(error) as raised:
        list(BopDataset(root, targets=False).frames())
    assert str(root / named) in str(raised.value)


def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match='no BOP dataset folder'):
        BopDataset(tmp_path / 'nowhere')
    root = write_dataset(tmp_path / 'bop')
    with pytest.raises(FileNotFoundError, match='train_pbr'):
        BopDataset(root, split='train_pbr')


@pytest.mark.skipif(not LMO.is_dir(), reason=f'LINEMOD-Occluded not found at {LMO} (../shared/data is only on the '
                                             'development machines)')
def test_lmo_poses_put_the_models_on_their_visible_boxes():
    dataset = BopDataset(LMO)
    assert dataset.models_dir == LMO / 'models_eval'
    models = load_bop_models(dataset.models_dir)
    targets = {}
    for t in json.loads((LMO / 'test_targets_bop19.json').read_text()):
        targets.setdefault((t['scene_id'], t['im_id']), set()).add(t['obj_id'])
    frames = list(dataset.frames())
    assert len(frames) == 100  # this copy holds 100 of the 200 target images
    checked, coverage = 0, []
    for frame in frames:
        assert {gt.obj_id for gt in frame.gts} == targets[frame.scene_id, frame.im_id]
        for gt in frame.gts:
            if gt.visib_fract is None or gt.visib_fract <= 0.5:
                continue
            model = models[gt.obj_id]
            x, y, w, h = gt.bbox_visib
            centroid = box_corner_keypoints(model.mesh)[8]
            pixels = (np.vstack([centroid, model.mesh.vertices]) @ gt.T_cam_obj[:3, :3].T + gt.T_cam_obj[:3, 3]) \
                @ frame.K.T
            u, v = pixels[:, 0] / pixels[:, 2], pixels[:, 1] / pixels[:, 2]
            inside = (u >= x - 2) & (u <= x + w + 2) & (v >= y - 2) & (v <= y + h + 2)
            assert inside[0], (frame.im_id, gt.obj_id)
            coverage.append(inside[1:].mean())
            checked += 1
    assert checked > 500
    assert np.mean(coverage) > 0.9  # the mostly visible models project mostly into their visible boxes
    rgb = dataset.load_rgb(frames[0])
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
