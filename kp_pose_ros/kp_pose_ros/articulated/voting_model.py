"""The PAGE voting network in ONNX Runtime, with the category models it was trained with.

The manifest (training.train_articulated) names the categories, their model files (articulated.categories YAML,
beside the network), the segmentation classes and radius channels of each, and the keypoint methods; a retrained
network needs no code change. All observations of a frame go through the network in one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kp_pose_ros.articulated.categories import CategoryModel
from kp_pose_ros.articulated.observation import Observation
from kp_pose_ros.core.onnx_model import ModelLoadError, OnnxModel, OnnxWrapper, load_manifest, manifest_value


@dataclass(frozen=True, eq=False)
class NetworkOutput:
    """One observation's network output, in metres and the camera frame."""

    probabilities: np.ndarray   # (N, classes) softmax
    radii: np.ndarray           # (methods, N, keypoint_channels) metres
    direct: np.ndarray          # (keypoint_channels, 3) camera frame, metres


@dataclass(frozen=True)
class CategorySlot:
    model: CategoryModel
    first_class: int
    first_channel: int

    @property
    def classes(self) -> slice:
        return slice(self.first_class, self.first_class + len(self.model.parts))

    @property
    def channels(self) -> slice:
        return slice(self.first_channel, self.first_channel + 3 * len(self.model.parts))


def load_category_models(model_path: str | Path) -> dict[str, CategoryModel]:
    """The category models the network's manifest names (YAMLs beside it), by category, without the network (the
    fitting node needs only these); ModelLoadError naming the file when one is missing or is not the model the network
    was trained with."""
    model_path = Path(model_path)
    manifest = load_manifest(model_path)
    models = {}
    try:
        for entry in manifest_value(manifest, 'categories', model_path):
            model = CategoryModel.load(model_path.parent / entry['model_file'])
            if model.category != entry['category'] or list(model.part_names) != list(entry['parts']):
                raise ModelLoadError(f'{entry["model_file"]} is not the category model the network was trained '
                                     f'with ({entry["category"]}: {entry["parts"]})')
            models[model.category] = model
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f'{model_path.with_suffix(".yaml")} or a category model it names is unusable: '
                             f'{exc}') from exc
    return models


class ArticulatedVotingModel(OnnxWrapper):
    def __init__(self, model_path: str | Path, providers: str = 'auto', threads: int = 0,
                 trt_cache_dir: str | Path = '', trt_fp16: bool = False):
        model_path = Path(model_path)
        manifest = load_manifest(model_path)
        self.manifest = manifest
        try:
            self.methods = tuple(str(m) for m in manifest_value(manifest, 'methods', model_path))
            self.num_classes = int(manifest_value(manifest, 'classes', model_path))
            self.num_channels = int(manifest_value(manifest, 'keypoint_channels', model_path))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f'model manifest {model_path.with_suffix(".yaml")} is malformed: {exc}') from exc
        models = load_category_models(model_path)
        slots = [CategorySlot(models[e['category']], int(e['first_class']), int(e['first_channel']))
                 for e in manifest_value(manifest, 'categories', model_path)]
        self.categories = {s.model.category: s for s in slots}
        self.model = OnnxModel(model_path, providers=providers, threads=threads, trt_cache_dir=trt_cache_dir,
                               trt_fp16=trt_fp16)

    def infer(self, observations: list[Observation]) -> list[NetworkOutput]:
        """The network on every observation (one batch; all have the same point count)."""
        if not observations:
            return []
        points = np.stack([o.normalised for o in observations])
        crop = np.stack([o.crop for o in observations]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        uv = np.stack([o.uv for o in observations]).astype(np.float32)
        seg, radii, direct = self.model.run({'points': points, 'crop': np.ascontiguousarray(crop), 'uv': uv},
                                            ['segmentation', 'radii', 'keypoints_direct'])
        seg = seg - seg.max(axis=-1, keepdims=True)
        prob = np.exp(seg)
        prob /= prob.sum(axis=-1, keepdims=True)
        out = []
        for b, obs in enumerate(observations):
            r = radii[b].reshape(len(obs.points), len(self.methods), self.num_channels).transpose(1, 0, 2)
            out.append(NetworkOutput(prob[b], r.astype(np.float64) * obs.scale,
                                     direct[b].astype(np.float64) * obs.scale + obs.centre))
        return out
