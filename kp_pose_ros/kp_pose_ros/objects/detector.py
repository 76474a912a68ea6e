"""2D object boxes from one RGB image: the first stage of the rigid-object pipeline, a YOLOv10 detector in ONNX.

Runs any ultralytics YOLOv10 export made with `model.export(format='onnx', nms=False)`: YOLOv10 is end-to-end (one
box per object, no NMS), so its single output [batch, 300, 6] already holds the final candidates as x1, y1, x2, y2,
score, class in the letterboxed input's pixels. Everything else the runtime needs comes from the file itself (its
input shape, and the metadata ultralytics writes: class names, stride, imgsz), so a retrained model needs no code or
manifest change. Pre-processing is ultralytics' own (LetterBox: centred, padded with 114, cv2.INTER_LINEAR; RGB;
/255; NCHW float32) so that scores and boxes are the ones its validation measured; tests compare both end to end.
"""
from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kp_pose_ros.core.image_codec import check_rgb8
from kp_pose_ros.core.letterbox import Letterbox
from kp_pose_ros.core.onnx_model import ModelLoadError, OnnxModel, OnnxWrapper

PAD_VALUE = 114  # ultralytics' LetterBox padding_value
INTERPOLATION = cv2.INTER_LINEAR  # ultralytics' LetterBox interpolation


@dataclass(frozen=True, eq=False)  # no generated ==: its fields are arrays
class Detections:
    """Boxes of one image, best score first. Box edges are continuous pixel coordinates of the original image (pixel
    i spans [i, i + 1), as in YOLO labels), clipped to [0, width] x [0, height]."""

    boxes: np.ndarray      # (N, 4) float64 x1, y1, x2, y2
    scores: np.ndarray     # (N,) float64
    class_ids: np.ndarray  # (N,) int64
    names: dict[int, str]  # class id -> name, for every class of the model

    def __len__(self) -> int:
        return len(self.scores)


def _metadata_literal(metadata: dict[str, str], key: str, path: Path):
    try:
        return ast.literal_eval(metadata[key])
    except KeyError:
        raise ModelLoadError(f'{path.name} has no "{key}" in its ONNX metadata (not an ultralytics export?)') from None
    except (ValueError, SyntaxError) as exc:
        raise ModelLoadError(f'{path.name}: ONNX metadata "{key}" is not a Python literal: {exc}') from exc


def _class_names(metadata: dict[str, str], path: Path) -> dict[int, str]:
    names = _metadata_literal(metadata, 'names', path)
    if not isinstance(names, dict) or not names:
        raise ModelLoadError(f'{path.name}: ONNX metadata "names" must be a non-empty dict, got {names!r}')
    try:
        return {operator.index(k): str(v) for k, v in names.items()}
    except TypeError:
        raise ModelLoadError(f'{path.name}: ONNX metadata "names" has non-integer class ids: {names!r}') from None


def _input_size(shape: list, metadata: dict[str, str], path: Path) -> tuple[int, int]:
    """(width, height) of the network input: from its static shape, else (dynamic export) from 'imgsz' [h, w]."""
    if len(shape) != 4 or shape[1] != 3:
        raise ModelLoadError(f'{path.name}: expected one NCHW RGB input [batch, 3, height, width], got {shape}')
    height, width = shape[2:]
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return width, height
    imgsz = _metadata_literal(metadata, 'imgsz', path)
    try:
        height, width = (operator.index(v) for v in ([imgsz] * 2 if isinstance(imgsz, int) else imgsz))
    except (TypeError, ValueError):
        raise ModelLoadError(f'{path.name}: ONNX metadata "imgsz" must be [height, width], got {imgsz!r}') from None
    return width, height


class YoloV10Detector(OnnxWrapper):
    """`detect(rgb)` -> Detections: the objects' boxes, scores and classes in the given image.

    input_size: (width, height) of the network input; names: class id -> name; stride: the coarsest feature stride."""

    def __init__(self, model_path: str | Path, providers: str = 'auto', threads: int = 0,
                 trt_cache_dir: str | Path = '', trt_fp16: bool = False):
        self.model = OnnxModel(model_path, providers=providers, threads=threads, trt_cache_dir=trt_cache_dir,
                               trt_fp16=trt_fp16)
        path = self.model.path
        inputs, outputs = self.model.session.get_inputs(), self.model.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f'{path.name} has inputs {self.model.input_names} and outputs '
                                 f'{self.model.output_names}; a YOLOv10 export has one of each')
        out_shape = outputs[0].shape
        if len(out_shape) != 3 or out_shape[2] != 6:
            raise ModelLoadError(f'{path.name}: output {outputs[0].name} has shape {out_shape}, not YOLOv10\'s '
                                 '[batch, max_det, 6] (x1, y1, x2, y2, score, class); export a YOLOv10 model with '
                                 "model.export(format='onnx', nms=False)")
        metadata = dict(self.model.session.get_modelmeta().custom_metadata_map)
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_size = _input_size(list(inputs[0].shape), metadata, path)  # (width, height)
        self.names = _class_names(metadata, path)
        stride = _metadata_literal(metadata, 'stride', path)
        if not isinstance(stride, int) or stride < 1 or any(s % stride for s in self.input_size):
            raise ModelLoadError(f'{path.name}: input {self.input_size[0]}x{self.input_size[1]} is not a multiple '
                                 f'of the stride {stride!r} in its metadata')
        self.stride = stride

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The network input (1, 3, H, W) float32 for an RGB image (H, W, 3) uint8, and where the image sits in it."""
        check_rgb8(rgb, 'detect')
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ValueError(f'empty image: {rgb.shape[1]}x{rgb.shape[0]}')
        box = Letterbox.fit((rgb.shape[1], rgb.shape[0]), self.input_size)
        x = box.apply(rgb, PAD_VALUE, INTERPOLATION).transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
        return x, box

    def detect(self, rgb: np.ndarray, score_threshold: float = 0.25, classes=None,
               max_detections: int | None = None) -> Detections:
        """Boxes in an RGB image (H, W, 3) uint8 with score above `score_threshold` (as ultralytics' `conf`), of the
        class ids in `classes` (all when None), at most `max_detections` (all when None), best first."""
        if not isinstance(score_threshold, (int, float, np.number)) or not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f'score_threshold must be a number in [0, 1], got {score_threshold!r}')
        if max_detections is not None and (not isinstance(max_detections, (int, np.integer)) or max_detections < 0):
            raise ValueError(f'max_detections must be an integer >= 0 or None, got {max_detections!r}')
        wanted = None
        if classes is not None:
            wanted = np.array(list(classes) if np.iterable(classes) else classes)
            if wanted.ndim != 1 or not (wanted.size == 0 or np.issubdtype(wanted.dtype, np.integer)):
                raise ValueError(f'classes must be a sequence of integer class ids, got {classes!r}')
            unknown = sorted(set(wanted.tolist()) - set(self.names))
            if unknown:
                raise ValueError(f'unknown class ids {unknown}; this model has {sorted(self.names)}')
        x, box = self.preprocess(rgb)
        rows = self.model.run({self.input_name: x}, [self.output_name])[0][0].astype(np.float64)
        keep = rows[:, 4] > float(score_threshold)
        class_ids = rows[:, 5].round().astype(np.int64)
        if wanted is not None:
            keep &= np.isin(class_ids, wanted)
        rows, class_ids = rows[keep], class_ids[keep]
        order = np.argsort(-rows[:, 4], kind='stable')[:max_detections]
        rows, class_ids = rows[order], class_ids[order]
        # Edges (continuous) map through the letterbox's pixel-centre transform shifted by half a pixel.
        corners = box.to_original(rows[:, :4].reshape(-1, 2, 2) - 0.5) + 0.5
        width, height = box.source_size
        boxes = np.clip(corners.reshape(-1, 4), 0.0, [width, height, width, height])
        return Detections(boxes, rows[:, 4].copy(), class_ids, self.names)
