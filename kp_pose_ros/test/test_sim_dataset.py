"""The dataset writer's files say the same as the scene's ground truth, and a reader gets them back."""
import json

import cv2
import numpy as np
import pytest
import yaml

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import transform_points
from kp_pose_ros.sim import dataset
from kp_pose_ros.sim.scene import SceneConfig

CAMERA = CameraModel.pinhole(160, 120, 150.0, 150.0, 79.5, 59.5)
CONFIG = SceneConfig(camera=CAMERA, num_distractors=1)


@pytest.fixture(scope='module')
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp('synthetic')
    calls = []
    dataset.write_dataset(out, 6, CONFIG, seed=3, frames_per_camera=2, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 6) for i in range(1, 7)]
    return out


def test_layout_and_meta(written):
    meta = yaml.safe_load((written / 'meta.yaml').read_text())
    assert meta['generator'] == 'kp_pose_ros.sim.dataset' and meta['layout_version'] == dataset.LAYOUT_VERSION
    assert meta['seed'] == 3 and meta['num_frames'] == 6 and meta['complete'] is True
    assert meta['camera']['width'] == 160 and meta['camera']['height'] == 120
    np.testing.assert_allclose(meta['camera']['K'], CAMERA.K)
    assert meta['keypoint_links'] == list(CONFIG.keypoint_links)
    assert meta['joint_names'] == [f'panda_joint{i}' for i in range(1, 8)]
    assert meta['link_names'][0] == 'panda_link0' and meta['link_names'][9] == 'panda_hand'
    assert meta['frames_per_camera'] == 2 and meta['depth_unit_m'] == 0.001
    for sub in ('rgb', 'depth', 'mask'):
        assert sorted(p.name for p in (written / sub).iterdir()) == [f'{i:06d}.png' for i in range(6)]
    assert dataset.load_meta(written) == meta


def test_annotations_agree_with_the_images(written):
    annotations = dataset.load_annotations(written)
    assert [a['index'] for a in annotations] == list(range(6))
    assert [a['camera_index'] for a in annotations] == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(annotations[0]['T_base_cam'], annotations[1]['T_base_cam'])
    assert not np.allclose(annotations[1]['T_base_cam'], annotations[2]['T_base_cam'])
    visible_checked = 0
    for a in annotations:
        rgb, depth, mask = dataset.load_frame(written, a)
        assert rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8
        assert depth.shape == (120, 160) and depth.dtype == np.float32
        assert mask.shape == (120, 160) and mask.dtype == np.uint8
        raw_depth = cv2.imread(str(written / a['depth']), cv2.IMREAD_UNCHANGED)
        assert raw_depth.dtype == np.uint16 and (raw_depth == 0).sum() == np.isnan(depth).sum()
        np.testing.assert_allclose(a['K'], CAMERA.K)
        np.testing.assert_allclose(transform_points(a['T_base_cam'], a['keypoints_cam']), a['keypoints_base'],
                                   atol=1e-9)
        np.testing.assert_allclose(a['keypoints_px'], CAMERA.project(a['keypoints_cam']), atol=1e-9)
        assert not np.any(a['visible'] & ~a['in_image'])
        for px, point in zip(a['keypoints_px'][a['visible']], a['keypoints_cam'][a['visible']]):
            u, v = np.round(px).astype(int)
            patch = mask[max(v - 2, 0):v + 3, max(u - 2, 0):u + 3]
            assert (patch > 0).any(), (a['index'], px)
            if mask[v, u] > 0:
                # Millimetre depth of the robot surface near the link frame origin: in front of it by up to the link's
                # radius, or a little behind where the origin lies in a groove of the mesh (panda_link3).
                assert -0.1 < point[2] - depth[v, u] < CONFIG.own_link_tolerance_m
            visible_checked += 1
    assert visible_checked >= 15


def test_same_seed_same_dataset(written, tmp_path):
    again = dataset.write_dataset(tmp_path / 'again', 2, CONFIG, seed=3, frames_per_camera=2)
    first, second = dataset.load_annotations(written)[:2], dataset.load_annotations(again)
    for a, b in zip(first, second):
        for key in ('joint_positions', 'T_base_cam', 'keypoints_px', 'visible'):
            np.testing.assert_array_equal(a[key], b[key])
        for image_a, image_b in zip(dataset.load_frame(written, a), dataset.load_frame(again, b)):
            np.testing.assert_array_equal(image_a, image_b)


def test_refuses_to_overwrite_and_reader_drops_a_cut_line(written, tmp_path):
    with pytest.raises(FileExistsError, match='new directory'):
        dataset.write_dataset(written, 1, CONFIG)
    copy = tmp_path / 'copy'
    copy.mkdir()
    text = (written / 'annotations.jsonl').read_text()
    (copy / 'annotations.jsonl').write_text(text + text.splitlines()[0][:100])  # a write cut short
    assert len(dataset.load_annotations(copy)) == 6
    (copy / 'annotations.jsonl').write_text('{"index": 0\n')
    with pytest.raises(ValueError, match='annotations.jsonl:1'):
        dataset.load_annotations(copy)
    with pytest.raises(FileNotFoundError, match='meta.yaml'):
        dataset.load_meta(copy)


def test_json_has_no_nan(written):
    for line in (written / 'annotations.jsonl').read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f'{name} in annotations'))


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / 'cli'
    assert dataset.main(['--out', str(out), '--frames', '2', '--seed', '5', '--camera', 'kinect_xbox360',
                         '--distractors', '2', '--no-random-background']) == 0
    meta = dataset.load_meta(out)
    assert meta['num_frames'] == 2 and meta['num_distractors'] == 2 and meta['random_background'] is False
    assert meta['camera']['K'][0][0] == pytest.approx(525.0, abs=0.5)
    assert len(dataset.load_annotations(out)) == 2
    assert 'wrote 2 frames' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        dataset.main(['--out', str(tmp_path / 'bad'), '--frames', '0'])
