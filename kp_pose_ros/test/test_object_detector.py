"""YOLOv10 object detector (objects.detector): boxes mapped back to known original pixels through the letterbox,
score / class filters and class names from a fake YOLOv10-shaped ONNX model; the same pre-processing and boxes as
ultralytics' own prediction on a real (untrained) YOLOv10n export; clear errors for bad images and model files."""
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kp_pose_ros.core.letterbox import Letterbox
from kp_pose_ros.core.onnx_model import ModelLoadError
from kp_pose_ros.objects.detector import YoloV10Detector

NAMES = {0: 'obj_000001', 1: 'obj_000005', 2: 'obj_000006'}


def fake_yolov10(path: Path, rows, input_shape=(1, 3, 256, 320), output_shape=(1, 300, 6), names=NAMES,
                 stride=32, imgsz=None) -> Path:
    """An ONNX model shaped like an ultralytics YOLOv10 export (nms=False) whose output is always `rows`
    (x1, y1, x2, y2, score, class in input pixels), zero rows after them; metadata as ultralytics writes it."""
    out = np.zeros(output_shape, np.float32)
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    if len(rows):
        out[0, :len(rows)] = rows
    const = helper.make_node('Constant', [], ['output0'], value=numpy_helper.from_array(out, 'detections'))
    graph = helper.make_graph([const], 'fake_yolov10',
                              [helper.make_tensor_value_info('images', TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info('output0', TensorProto.FLOAT, list(output_shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    metadata = {'task': 'detect', 'stride': str(stride), 'names': str(names), 'end2end': 'True',
                'imgsz': str(imgsz if imgsz is not None else list(input_shape[2:]))}
    helper.set_model_props(model, {k: v for k, v in metadata.items() if names is not None or k != 'names'})
    onnx.save(model, str(path))
    return path


def rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (coloured blobs), so that resizing filters and padding change what a network sees."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (6, 6, 3), np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)


# --------------------------------------------------------------------------------------------- letterbox mapping
# The fake model's input is 320x256 (width x height). Each case: original size, boxes in input pixels, the same
# boxes in original pixels worked out by hand (scale r = min(320 / w, 256 / h), resized size round(w r) x round(h r),
# centred padding (input - resized) // 2, box edges x_orig = (x_in - pad_x) / (resized_w / w)).
MAPPING_CASES = [
    # 640x480: r = 0.5, resized 320x240, padding (0, 8).
    ((640, 480), [[10, 18, 110, 128]], [[20, 20, 220, 240]]),
    # 1280x720: r = 0.25, resized 320x180, padding (0, 38); the whole input maps beyond the image and is clipped.
    ((1280, 720), [[40, 48, 80, 98], [0, 0, 320, 256]], [[160, 40, 320, 240], [0, 0, 1280, 720]]),
    # 160x400 (portrait): r = 0.64, resized round(102.4) = 102 x 256, padding (109, 0), x scale 102 / 160 = 0.6375.
    ((160, 400), [[115.375, 16, 172.75, 128]], [[10, 25, 100, 200]]),
    # 97x61, enlarged: r = min(3.299, 4.197), resized 320x round(201.24) = 201, padding (0, 27); y scale 201 / 61.
    ((97, 61), [[32.0, 27 + 201 / 61 * 5, 320.0, 27 + 201 / 61 * 60]], [[9.7, 5, 97, 60]]),
]


@pytest.mark.parametrize('size, boxes_in, expected', MAPPING_CASES)
def test_boxes_map_to_known_original_pixels(tmp_path, size, boxes_in, expected):
    rows = [list(b) + [0.9 - 0.1 * i, i % 3] for i, b in enumerate(boxes_in)]
    detector = YoloV10Detector(fake_yolov10(tmp_path / 'fake.onnx', rows), providers='cpu')
    assert detector.input_size == (320, 256) and detector.stride == 32
    detections = detector.detect(rgb(*size))
    assert detections.boxes.dtype == np.float64 and detections.boxes.shape == (len(expected), 4)
    # float32 network output: input-pixel values carry ~1e-5 px of rounding, times the scale back.
    np.testing.assert_allclose(detections.boxes, expected, rtol=0, atol=1e-4)


def test_score_threshold_class_filter_order_and_names(tmp_path):
    rows = [[10, 10, 50, 50, 0.30, 2], [20, 20, 60, 60, 0.90, 0], [30, 30, 70, 70, 0.25, 1],
            [40, 40, 80, 80, 0.60, 2], [50, 50, 90, 90, 0.10, 0]]
    detector = YoloV10Detector(fake_yolov10(tmp_path / 'fake.onnx', rows), providers='cpu')
    assert detector.names == NAMES
    image = rgb(640, 512)  # scale exactly 0.5, no padding
    detections = detector.detect(image)
    # Scores above the threshold (0.25 itself is not, as in ultralytics' conf), best first.
    np.testing.assert_allclose(detections.scores, [0.9, 0.6, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(detections.class_ids, [0, 2, 2])
    np.testing.assert_allclose(detections.boxes, [[40, 40, 120, 120], [80, 80, 160, 160], [20, 20, 100, 100]])
    assert [detections.names[c] for c in detections.class_ids] == ['obj_000001', 'obj_000006', 'obj_000006']
    assert len(detector.detect(image, score_threshold=0.0)) == 5
    assert len(detector.detect(image, score_threshold=0.95)) == 0
    only = detector.detect(image, score_threshold=0.2, classes=[1, 2])
    np.testing.assert_array_equal(only.class_ids, [2, 2, 1])
    assert detector.detect(image, classes=[]).boxes.shape == (0, 4)
    top = detector.detect(image, score_threshold=0.0, max_detections=2)
    np.testing.assert_allclose(top.scores, [0.9, 0.6], rtol=1e-6)


def test_dynamic_input_takes_the_size_from_imgsz_metadata(tmp_path):
    path = fake_yolov10(tmp_path / 'dynamic.onnx', [[0, 0, 32, 32, 0.5, 0]], input_shape=('batch', 3, 'h', 'w'),
                        output_shape=(1, 300, 6), imgsz=[192, 256])
    detector = YoloV10Detector(path, providers='cpu')
    assert detector.input_size == (256, 192)


@pytest.mark.parametrize('image', [
    np.zeros((48, 64, 3), np.float32), np.zeros((48, 64), np.uint8), np.zeros((48, 64, 4), np.uint8),
    np.zeros((0, 64, 3), np.uint8), [[0, 0, 0]], None,
])
def test_bad_images_raise_value_error(tmp_path, image):
    detector = YoloV10Detector(fake_yolov10(tmp_path / 'fake.onnx', []), providers='cpu')
    with pytest.raises(ValueError, match='image'):
        detector.detect(image)


@pytest.mark.parametrize('kwargs, message', [
    ({'score_threshold': 1.5}, 'score_threshold'), ({'score_threshold': 'high'}, 'score_threshold'),
    ({'max_detections': -1}, 'max_detections'), ({'max_detections': 2.5}, 'max_detections'),
    ({'classes': [7]}, r'unknown class ids \[7\]'), ({'classes': ['obj_000001']}, 'classes'),
    ({'classes': 2}, 'classes'),
])
def test_bad_arguments_raise_value_error(tmp_path, kwargs, message):
    detector = YoloV10Detector(fake_yolov10(tmp_path / 'fake.onnx', []), providers='cpu')
    with pytest.raises(ValueError, match=message):
        detector.detect(rgb(64, 48), **kwargs)


@pytest.mark.parametrize('kwargs, message', [
    ({'output_shape': (1, 84, 8400)}, "not YOLOv10's"),                  # a YOLOv8-style head that needs NMS
    ({'input_shape': (1, 1, 256, 320)}, 'RGB input'),
    ({'names': None}, 'no "names"'),
    ({'names': ['a', 'b']}, 'must be a non-empty dict'),
    ({'stride': 48}, 'not a multiple of the stride'),
    ({'input_shape': (1, 3, 'h', 'w'), 'imgsz': 'square'}, '"imgsz"'),
])
def test_models_that_are_not_yolov10_exports_raise_model_load_error(tmp_path, kwargs, message):
    with pytest.raises(ModelLoadError, match=message):
        YoloV10Detector(fake_yolov10(tmp_path / 'bad.onnx', [], **kwargs), providers='cpu')


def test_missing_or_corrupt_model_file_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match='not found'):
        YoloV10Detector(tmp_path / 'absent.onnx', providers='cpu')
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    with pytest.raises(ModelLoadError):
        YoloV10Detector(tmp_path / 'junk.onnx', providers='cpu')


# ------------------------------------------------------------------------------------ against ultralytics itself
IMGSZ = (160, 224)  # (height, width) of the exported network input, as ultralytics' imgsz
SIZES = [(640, 480), (300, 100), (517, 333), (1280, 720), (40, 50), (224, 160)]  # (width, height)


@pytest.fixture(scope='session')
def yolo_export(tmp_path_factory):
    """(ultralytics module, path of a yolov10n ONNX export at IMGSZ): untrained, seeded weights whose batch-norm
    statistics are set from a few images, so that boxes, scores and classes depend on the image, and whose box
    distances are short."""
    folder = tmp_path_factory.mktemp('yolov10n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('YOLO_CONFIG_DIR', str(folder / 'config'))  # ultralytics writes its settings there
        mp.setenv('YOLO_OFFLINE', '1')
        ultralytics = pytest.importorskip('ultralytics', reason='ultralytics is a test-time dependency')
        import torch

        torch.manual_seed(0)
        model = ultralytics.YOLO('yolov10n.yaml')
        with torch.no_grad():
            for module in model.model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.reset_running_stats()
                    module.momentum = None  # cumulative average over the calibration batch
            model.model.train()
            batch = np.stack([rgb(IMGSZ[1], IMGSZ[0], seed) for seed in range(8)])
            model.model(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
            model.model.eval()
            # Box logits favouring short distances (DFL bins 0, 1, 2, ...): boxes of 1-3 strides, mostly inside the
            # image rather than clipped to its border.
            for branch in model.model.model[-1].one2one_cv2:
                branch[-1].bias.copy_(-torch.arange(16.0).repeat(4))
        with pytest.MonkeyPatch.context() as here:
            here.chdir(folder)  # the export lands beside the model's yaml name: the working directory
            path = folder / model.export(format='onnx', nms=False, imgsz=list(IMGSZ), simplify=False, verbose=False)
        yield ultralytics, path


def test_letterbox_matches_ultralytics_exactly(yolo_export):
    ultralytics, path = yolo_export
    from ultralytics.data.augment import LetterBox

    detector = YoloV10Detector(path, providers='cpu')
    assert detector.input_size == IMGSZ[::-1]
    rng = np.random.default_rng(5)
    sizes = SIZES + [tuple(int(v) for v in rng.integers(1, 900, 2)) for _ in range(60)]
    for width, height in sizes:
        theirs = LetterBox(IMGSZ, auto=False, stride=32)(image=rgb(width, height)[..., ::-1].copy())
        expected = theirs[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
        ours, box = detector.preprocess(rgb(width, height))
        assert ours.shape == expected.shape and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, expected, err_msg=f'{width}x{height}')
        assert box == Letterbox.fit((width, height), IMGSZ[::-1])


def test_detections_match_ultralytics_predict(yolo_export):
    ultralytics, path = yolo_export
    detector = YoloV10Detector(path, providers='cpu')
    theirs_model = ultralytics.YOLO(str(path), task='detect')
    assert theirs_model.names == detector.names
    for seed, (width, height) in enumerate(SIZES):
        image = rgb(width, height, seed)
        # Untrained: scores are small and spread over many classes; compare every candidate above a low threshold.
        ours = detector.detect(image, score_threshold=1e-4)
        result = theirs_model.predict(np.ascontiguousarray(image[..., ::-1]), conf=1e-4, imgsz=list(IMGSZ),
                                      verbose=False)[0]
        theirs = result.boxes
        assert len(ours) == len(theirs) > 10, f'{width}x{height}'
        np.testing.assert_allclose(ours.scores, theirs.conf.numpy(), rtol=1e-5, err_msg=f'{width}x{height}')
        np.testing.assert_array_equal(ours.class_ids, theirs.cls.numpy().astype(int), err_msg=f'{width}x{height}')
        scale = max(width, height)
        np.testing.assert_allclose(ours.boxes, theirs.xyxy.numpy(), rtol=0, atol=1e-5 * scale,
                                   err_msg=f'{width}x{height}')
        inside = np.all((ours.boxes > 0) & (ours.boxes < [width, height, width, height]), axis=1)
        assert inside.sum() > 10, 'boxes inside the image, not only clipped to its border'


# ------------------------------------------------------------------------------------------- training data split
def test_training_split_holds_out_whole_layouts_deterministically():
    from kp_pose_ros.training.train_detector import layout_of, split_images

    meta = {'frames_per_scene': 1000, 'views_per_layout': 5}
    images = [Path(f'{i // 1000:06d}_{i % 1000:06d}.png') for i in range(2000)]  # two BOP scenes, 400 layouts
    train, val = split_images(images, meta, 0.1, seed=3)
    assert (train, val) == split_images(images, meta, 0.1, seed=3)
    assert len(val) == 40 * 5 and len(train) + len(val) == len(images)
    assert not {layout_of(i, meta) for i in train} & {layout_of(i, meta) for i in val}
    assert layout_of(Path('000001_000004.png'), meta) == 200
    assert split_images(images, meta, 0.1, seed=4)[1] != val
    with pytest.raises(ValueError, match='at least 2 layouts'):
        split_images(images[:5], meta, 0.1, seed=0)
