"""2D object keypoints on detection crops: the ResNet-18 heatmap regressor of paper 004, in ONNX.

One network serves an object set and draws K heatmaps per object; for a detection, the maps of the detected object
are read. Every crop of a frame goes through the network in one batch. What the runtime needs to cut, feed and
read the crops (input size, normalisation, crop padding, stride, decoding, the object order and the 3D keypoint
file) comes from the model's manifest (written by training.train_object_keypoints), so a retrained model needs no
code change.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kp_pose_ros.core.heatmaps import decode_heatmaps, heatmap_to_input
from kp_pose_ros.core.image_codec import check_rgb8
from kp_pose_ros.core.onnx_model import (
    ModelLoadError,
    OnnxModel,
    OnnxWrapper,
    load_manifest,
    manifest_value,
    output_channels,
)
from kp_pose_ros.objects.crops import CropTransform, crop_images, square_crop
from kp_pose_ros.objects.keypoints import ObjectKeypoints


@dataclass(frozen=True)
class CropKeypoints:
    """Keypoints of N detections: pixels (N, K, 2) in the original image, confidence (N, K) (the heatmap peaks)."""

    pixels: np.ndarray
    confidence: np.ndarray
    crops: tuple[CropTransform, ...]


def load_keypoint_set(model_path: str | Path) -> tuple[tuple[int, ...], tuple[str, ...], tuple[np.ndarray, ...]]:
    """(obj_ids, names, keypoints_3d (K, 3) metres per object) of a keypoint model, from its manifest and 3D keypoint
    file alone: the pose stage needs these but not the network. ModelLoadError naming the file when unusable."""
    model_path = Path(model_path)
    manifest = load_manifest(model_path)
    where = model_path.with_suffix('.yaml')
    try:
        obj_ids = tuple(int(i) for i in manifest_value(manifest, 'objects.obj_ids', model_path))
        names = tuple(str(n) for n in manifest_value(manifest, 'objects.names', model_path))
        keypoints_file = model_path.parent / str(manifest_value(manifest, 'objects.keypoints_file', model_path))
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f'model manifest {where} is malformed: {exc}') from exc
    if len(names) != len(obj_ids):
        raise ModelLoadError(f'model manifest {where}: expected one name per object')
    try:
        store = ObjectKeypoints.load(keypoints_file)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f'{where} names 3D keypoints {keypoints_file}, which cannot be read: {exc}') from exc
    missing = sorted(set(obj_ids) - set(store.points))
    if missing:
        raise ModelLoadError(f'{keypoints_file} has no keypoints for objects {missing}')
    return obj_ids, names, tuple(np.asarray(store.points[i], np.float64) for i in obj_ids)


class ObjectKeypointModel(OnnxWrapper):
    """`predict(rgb, boxes, object_index)` -> CropKeypoints; `keypoints_3d[object_index]` are the model points."""

    def __init__(self, model_path: str | Path, providers: str = 'auto', threads: int = 0,
                 trt_cache_dir: str | Path = '', trt_fp16: bool = False):
        model_path = Path(model_path)
        self.obj_ids, self.names, self.keypoints_3d = load_keypoint_set(model_path)
        manifest = load_manifest(model_path)
        self.manifest = manifest
        where = model_path.with_suffix('.yaml')
        try:
            self.input_name = str(manifest_value(manifest, 'input.name', model_path))
            _, channels, height, width = manifest_value(manifest, 'input.shape', model_path)
            self.crop_size = int(width)
            self.padding = float(manifest_value(manifest, 'input.crop.padding', model_path))
            self.pad_value = float(manifest_value(manifest, 'input.crop.pad_value', model_path))
            self._mean = np.array(manifest_value(manifest, 'input.normalisation.mean', model_path), np.float32)
            self._std = np.array(manifest_value(manifest, 'input.normalisation.std', model_path), np.float32)
            self.output_name = str(manifest_value(manifest, 'output.name', model_path))
            self.stride = float(manifest_value(manifest, 'output.stride', model_path))
            self.smoothing_sigma = float(manifest_value(manifest, 'decoding.smoothing_sigma', model_path))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f'model manifest {where} is malformed: {exc}') from exc
        if channels != 3 or int(height) != self.crop_size:
            raise ModelLoadError(f'model manifest {where}: expected a square 3-channel input')
        self.num_keypoints = len(self.keypoints_3d[0])
        self.model = OnnxModel(model_path, providers=providers, threads=threads, trt_cache_dir=trt_cache_dir,
                               trt_fp16=trt_fp16)
        channels_out = output_channels(self.model, self.input_name, self.output_name, model_path)
        if channels_out != len(self.obj_ids) * self.num_keypoints:
            raise ModelLoadError(f'{model_path.name} outputs {channels_out} heatmaps; its manifest lists '
                                 f'{len(self.obj_ids)} objects x {self.num_keypoints} keypoints')

    def index_of(self, name: str) -> int | None:
        """Object index of a class name (e.g. a detector's 'obj_000005'), None when the model does not know it."""
        return self.names.index(name) if name in self.names else None

    def predict(self, rgb: np.ndarray, boxes: np.ndarray, object_index: np.ndarray) -> CropKeypoints:
        """Keypoints of each detection (xyxy box in `rgb`'s pixels, object index into self.obj_ids), one batch."""
        check_rgb8(rgb, 'predict')
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        object_index = np.asarray(object_index, int).reshape(-1)
        if len(boxes) != len(object_index):
            raise ValueError(f'{len(boxes)} boxes but {len(object_index)} object indices')
        if np.any((object_index < 0) | (object_index >= len(self.obj_ids))):
            raise ValueError(f'object indices must lie in [0, {len(self.obj_ids)})')
        k = self.num_keypoints
        if len(boxes) == 0:
            return CropKeypoints(np.zeros((0, k, 2)), np.zeros((0, k)), ())
        crops = tuple(square_crop(box, self.crop_size, padding=self.padding) for box in boxes)
        images = crop_images(rgb, crops, pad_value=self.pad_value)
        x = (images.astype(np.float32) - self._mean) / self._std
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        maps = self.model.run({self.input_name: x}, [self.output_name])[0]
        n, _, h, w = maps.shape
        own = maps.reshape(n, -1, k, h, w)[np.arange(n), object_index]
        coords, confidence = decode_heatmaps(own, self.smoothing_sigma)
        crop_pixels = heatmap_to_input(coords, self.stride)
        pixels = np.stack([crop.to_image(p) for crop, p in zip(crops, crop_pixels)])
        return CropKeypoints(pixels, confidence, crops)
