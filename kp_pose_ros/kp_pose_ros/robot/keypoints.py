"""2D robot keypoints from one RGB image: the heatmap network of RoboKeyGen's detection stage (§III-A.1), in ONNX.

Everything the runtime needs to feed and read the network (input size, normalisation, padding, heatmap stride,
keypoint names, decoding) comes from the model's manifest, so a retrained model with other settings needs no code
change. The image is letterboxed into the input, the heatmaps decoded to sub-pixel peaks and the peaks mapped back
to the original image; each keypoint's confidence is its heatmap peak (low for keypoints outside the image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kp_pose_ros.core.heatmaps import decode_heatmaps, heatmap_to_input
from kp_pose_ros.core.image_codec import check_rgb8
from kp_pose_ros.core.letterbox import Letterbox
from kp_pose_ros.core.onnx_model import (
    ModelLoadError,
    OnnxModel,
    OnnxWrapper,
    load_manifest,
    manifest_value,
    output_channels,
)


class RobotKeypointDetector(OnnxWrapper):
    """`detect(rgb)` -> (pixels (N, 2) in the given image, confidence (N,)), N = len(keypoint_names)."""

    def __init__(self, model_path: str | Path, providers: str = 'auto', threads: int = 0,
                 trt_cache_dir: str | Path = '', trt_fp16: bool = False):
        model_path = Path(model_path)
        manifest = load_manifest(model_path)
        self.manifest = manifest
        try:
            names = manifest_value(manifest, 'keypoint_names', model_path)
            self.keypoint_names: tuple[str, ...] = tuple(str(n) for n in names)
            self.input_name = str(manifest_value(manifest, 'input.name', model_path))
            batch, channels, height, width = manifest_value(manifest, 'input.shape', model_path)
            self.input_size = (int(width), int(height))
            self.pad_value = float(manifest_value(manifest, 'input.letterbox.pad_value', model_path))
            self._mean = np.array(manifest_value(manifest, 'input.normalisation.mean', model_path), np.float32)
            self._std = np.array(manifest_value(manifest, 'input.normalisation.std', model_path), np.float32)
            self.output_name = str(manifest_value(manifest, 'output.name', model_path))
            self.stride = float(manifest_value(manifest, 'output.stride', model_path))
            self.smoothing_sigma = float(manifest_value(manifest, 'decoding.smoothing_sigma', model_path))
            # Above this confidence, the model's evaluation found TARGET_RELIABILITY of keypoints right.
            self.suggested_confidence_threshold = float(
                manifest_value(manifest, 'decoding.suggested_confidence_threshold', model_path))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f'model manifest {model_path.with_suffix(".yaml")} is malformed: {exc}') from exc
        if channels != 3 or self._mean.shape != (3,) or self._std.shape != (3,) or np.any(self._std <= 0):
            raise ModelLoadError(f'model manifest {model_path.with_suffix(".yaml")}: expected a 3-channel input with '
                                 f'3 means and 3 positive stds, got shape {[batch, channels, height, width]}')
        self.model = OnnxModel(model_path, providers=providers, threads=threads, trt_cache_dir=trt_cache_dir,
                               trt_fp16=trt_fp16)
        channels_out = output_channels(self.model, self.input_name, self.output_name, model_path)
        if channels_out != len(self.keypoint_names):
            raise ModelLoadError(f'{model_path.name} outputs {channels_out} heatmaps for {len(self.keypoint_names)} '
                                 f'keypoint names in its manifest')

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints of the robot in an RGB image (H, W, 3) uint8, in that image's pixels (centres at integers)."""
        check_rgb8(rgb, 'detect')
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            raise ValueError(f'image too small: {rgb.shape[1]}x{rgb.shape[0]}')
        box = Letterbox.fit((rgb.shape[1], rgb.shape[0]), self.input_size)
        x = (box.apply(rgb, self.pad_value).astype(np.float32) - self._mean) / self._std
        heatmaps = self.model.run({self.input_name: x.transpose(2, 0, 1)[None]}, [self.output_name])[0][0]
        coords, confidence = decode_heatmaps(heatmaps, self.smoothing_sigma)
        return box.to_original(heatmap_to_input(coords, self.stride)), confidence
