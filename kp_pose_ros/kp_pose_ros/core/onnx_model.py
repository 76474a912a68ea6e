"""ONNX Runtime sessions with the provider order users expect (TensorRT, CUDA, CPU) and clear errors for a missing
or corrupt model file, plus the YAML manifest every committed model carries beside it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

LOG = logging.getLogger(__name__)
PROVIDER_CHOICES = ('auto', 'tensorrt', 'cuda', 'cpu')
_PROVIDERS = {
    'tensorrt': ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'],
    'cuda': ['CUDAExecutionProvider', 'CPUExecutionProvider'],
    'cpu': ['CPUExecutionProvider'],
}


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable or not a valid ONNX model."""


def _gpu_present() -> bool:
    # onnxruntime-gpu lists the CUDA providers even without a GPU and then logs an error creating them.
    return any(Path('/dev').glob('nvidia[0-9]*'))


def resolve_providers(preference: str = 'auto') -> list[str]:
    import onnxruntime as ort

    if preference not in PROVIDER_CHOICES:
        raise ValueError(f"unknown execution provider '{preference}', expected one of: {', '.join(PROVIDER_CHOICES)}")
    if preference == 'auto':
        preference = 'cuda' if _gpu_present() else 'cpu'
    available = set(ort.get_available_providers())
    return [p for p in _PROVIDERS[preference] if p in available] or ['CPUExecutionProvider']


class OnnxModel:
    """One inference session; `run` takes and returns numpy arrays by input/output name."""

    def __init__(self, path: str | Path, providers: str = 'auto', threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f'model file not found: {self.path}')
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=resolve_providers(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelLoadError(f'cannot load ONNX model {self.path}: {exc}') from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.path.name}: missing input(s) {', '.join(sorted(missing))}")
        return self.session.run(list(outputs) if outputs else None,
                                {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()})


def load_manifest(model_path: str | Path) -> dict:
    """The manifest beside a model: `<model>.yaml` (inputs, outputs, preprocessing, names, data, seed, metrics)."""
    path = Path(model_path).with_suffix('.yaml')
    if not path.is_file():
        raise ModelLoadError(f'model manifest not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            manifest = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ModelLoadError(f'model manifest {path} is not valid YAML: {exc}') from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(f'model manifest {path} is not a mapping')
    return manifest


def manifest_value(manifest: dict, path: str, model_path: str | Path):
    """The manifest entry at dotted `path` (e.g. 'input.shape'); ModelLoadError naming the file when absent."""
    value = manifest
    for key in path.split('.'):
        if not isinstance(value, dict) or key not in value:
            raise ModelLoadError(f'model manifest {Path(model_path).with_suffix(".yaml")} lacks "{path}"')
        value = value[key]
    return value
