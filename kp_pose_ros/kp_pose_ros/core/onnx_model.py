"""ONNX Runtime sessions with the provider order users expect (TensorRT, CUDA, CPU), a record of which provider runs
and why the faster ones did not, warm-up, and clear errors for a missing or corrupt model file; plus the YAML
manifest every committed model carries beside it.

Provider chain for a preference (`providers` parameter of every node):
  auto, tensorrt -> TensorRT (engine cache, FP16 optional), CUDA, CPU;  cuda -> CUDA, CPU;  cpu -> CPU.
A candidate is skipped, with a note saying why, when this onnxruntime build lacks it (the CPU-only `onnxruntime`
package instead of `onnxruntime-gpu`), when there is no NVIDIA GPU device, when the libraries it needs cannot be
loaded (TensorRT's libnvinfer, the CUDA/cuDNN libraries of this onnxruntime build), or when onnxruntime asked for it
did not create it (it falls back to the next provider by itself and only logs why)."""
from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

LOG = logging.getLogger(__name__)
PROVIDER_CHOICES = ('auto', 'tensorrt', 'cuda', 'cpu')
TENSORRT, CUDA, CPU = 'TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'
PROVIDER_LABELS = {TENSORRT: 'TensorRT', CUDA: 'CUDA', CPU: 'CPU'}
_CHAINS = {
    'auto': (TENSORRT, CUDA, CPU),
    'tensorrt': (TENSORRT, CUDA, CPU),
    'cuda': (CUDA, CPU),
    'cpu': (CPU,),
}
# Shared-library names of TensorRT's core library, newest first (TensorRT 10 for onnxruntime >= 1.18, 8 before).
_NVINFER_NAMES = ('libnvinfer.so.10', 'libnvinfer.so.8', 'libnvinfer.so')
# Device nodes of an NVIDIA GPU: discrete GPUs (/dev/nvidia0, ...) and Jetson's integrated one.
_GPU_DEVICE_GLOBS = ('nvidia[0-9]*', 'nvhost-ctrl-gpu', 'nvgpu')
_ORT_ONNX_TYPES = {'tensor(float)': np.float32, 'tensor(float16)': np.float16, 'tensor(double)': np.float64,
                   'tensor(int64)': np.int64, 'tensor(int32)': np.int32, 'tensor(int8)': np.int8,
                   'tensor(uint8)': np.uint8, 'tensor(bool)': np.bool_}


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable or not a valid ONNX model."""


def provider_label(name: str) -> str:
    """'CUDAExecutionProvider' -> 'CUDA' (names without a label pass through)."""
    return PROVIDER_LABELS.get(name, name)


def _gpu_present() -> bool:
    # onnxruntime-gpu lists the CUDA providers even without a GPU and then logs an error creating them.
    dev = Path('/dev')
    return any(any(dev.glob(pattern)) for pattern in _GPU_DEVICE_GLOBS)


def _ort_package() -> str:
    """Which onnxruntime distribution is installed, for the notes ('onnxruntime-gpu 1.18.0')."""
    from importlib import metadata

    for dist in ('onnxruntime-gpu', 'onnxruntime'):
        try:
            return f'{dist} {metadata.version(dist)}'
        except metadata.PackageNotFoundError:
            continue
    import onnxruntime as ort

    return f'onnxruntime {ort.__version__}'


def _ort_cuda_version() -> str:
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return ''
    return str(getattr(info, 'cuda_version', '') or '')


@lru_cache(maxsize=None)
def _preload_gpu_libraries() -> None:
    """Let onnxruntime find CUDA/cuDNN/TensorRT installed as pip packages (nvidia-*, tensorrt): its own preload
    (onnxruntime >= 1.21) and TensorRT's pip library folder, loaded globally so the provider libraries resolve them."""
    import onnxruntime as ort

    preload = getattr(ort, 'preload_dlls', None)
    if preload is not None:
        with contextlib.redirect_stdout(io.StringIO()) as out:  # it prints what it could not find
            try:
                preload()
            except Exception as exc:  # noqa: BLE001 - a failed preload only means the libraries may be missing
                LOG.debug('onnxruntime.preload_dlls failed: %s', exc)
        if out.getvalue().strip():
            LOG.debug('onnxruntime.preload_dlls: %s', out.getvalue().strip())
    try:
        from importlib.util import find_spec

        spec = find_spec('tensorrt_libs')
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            for lib in sorted(Path(folder).glob('libnvinfer.so.*')):
                try:
                    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
                    break
                except OSError as exc:
                    LOG.debug('cannot preload %s: %s', lib, exc)


def _nvinfer_error() -> str | None:
    """None when TensorRT's libnvinfer loads, else why not."""
    for name in _NVINFER_NAMES:
        try:
            ctypes.CDLL(name)
            return None
        except OSError:
            continue
    return f"TensorRT libraries not loadable ({', '.join(_NVINFER_NAMES[:2])} not found; install TensorRT " \
           f"or `pip install tensorrt`, or add its lib folder to LD_LIBRARY_PATH)"


def _provider_library_error(kind: str) -> str | None:
    """None when onnxruntime's provider library for `kind` ('cuda' or 'tensorrt') and every library it links
    (CUDA, cuBLAS, cuDNN, ...) load; else the loader's message, which names the first missing library. No check
    (None) where the library is not laid out as in the Linux onnxruntime-gpu wheel."""
    if not sys.platform.startswith('linux'):
        return None
    import onnxruntime as ort

    capi = Path(ort.__file__).resolve().parent / 'capi'
    shared, library = capi / 'libonnxruntime_providers_shared.so', capi / f'libonnxruntime_providers_{kind}.so'
    if not shared.is_file() or not library.is_file():
        return None
    try:
        # onnxruntime itself loads the shared bridge globally before a provider library; so must a probe.
        ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc)
    return None


def _skip_reason(provider: str, available: Sequence[str]) -> str | None:
    """Why `provider` cannot run here, judged before asking onnxruntime; None when it may."""
    if provider == CPU:
        return None
    if provider not in available:
        return f'not in this onnxruntime build ({_ort_package()}; GPU providers need onnxruntime-gpu)'
    if not _gpu_present():
        return 'no NVIDIA GPU (/dev/nvidia* absent)'
    _preload_gpu_libraries()
    cuda = _ort_cuda_version()
    needs = f' (this onnxruntime build needs CUDA {cuda} and cuDNN)' if cuda else ''
    if provider == TENSORRT:
        error = _nvinfer_error()
        if error:
            return error
        error = _provider_library_error('tensorrt')
        if error:
            return f'libraries of the TensorRT provider not loadable: {error}{needs}'
    if provider == CUDA:
        error = _provider_library_error('cuda')
        if error:
            return f'CUDA libraries not loadable: {error}{needs}'
    return None


def plan_providers(preference: str = 'auto', trt_cache_dir: str | Path = '', trt_fp16: bool = False
                   ) -> tuple[list, list[str]]:
    """The providers to request from onnxruntime for `preference` and a note for each one skipped.

    Returns (providers, notes): providers as InferenceSession takes them (names, or (name, options) for TensorRT),
    always ending with the CPU; notes like 'TensorRT: skipped: no NVIDIA GPU (/dev/nvidia* absent)'."""
    import onnxruntime as ort

    if preference not in PROVIDER_CHOICES:
        raise ValueError(f"unknown execution provider '{preference}', expected one of: {', '.join(PROVIDER_CHOICES)}")
    available = ort.get_available_providers()
    providers, notes = [], []
    for provider in _CHAINS[preference]:
        reason = _skip_reason(provider, available)
        if reason:
            notes.append(f'{provider_label(provider)}: skipped: {reason}')
        elif provider == TENSORRT:
            providers.append((TENSORRT, tensorrt_options(trt_cache_dir, trt_fp16)))
        else:
            providers.append(provider)
    return providers, notes


def tensorrt_options(trt_cache_dir: str | Path = '', trt_fp16: bool = False) -> dict:
    """TensorRT provider options: FP16 on request; engines cached in `trt_cache_dir` (created) when given, so the
    engine is built once per model and GPU instead of at every start."""
    options = {'trt_fp16_enable': bool(trt_fp16)}
    if trt_cache_dir:
        cache = Path(os.path.expanduser(str(trt_cache_dir)))
        cache.mkdir(parents=True, exist_ok=True)
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
    return options


def resolve_providers(preference: str = 'auto') -> list[str]:
    """Names of the providers `preference` resolves to here (TensorRT without options), CPU last."""
    return [p if isinstance(p, str) else p[0] for p in plan_providers(preference)[0]]


def _ep_error(printed: str) -> str:
    """The reason in onnxruntime's printed 'EP Error ... when using [...]' fallback message, shortened."""
    for line in printed.splitlines():
        if line.startswith('EP Error'):
            text = line[len('EP Error'):].lstrip(': ').strip()
            text = text.split(' when using ')[0]
            # '/onnxruntime_src/...cc:729 void onnxruntime::...(...) Please install ...' -> 'Please install ...'
            if text.startswith('/') and ') ' in text:
                text = text.split(') ', 1)[1]
            return text[:300]
    return ''


class OnnxModel:
    """One inference session; `run` takes and returns numpy arrays by input/output name.

    provider: the execution provider that runs (first of the session's providers), e.g. 'CUDAExecutionProvider';
    providers: the session's providers in order; provider_notes: one line per faster provider skipped, with why."""

    def __init__(self, path: str | Path, providers: str = 'auto', threads: int = 0, trt_cache_dir: str | Path = '',
                 trt_fp16: bool = False):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f'model file not found: {self.path}')
        self.preference = providers
        requested, notes = plan_providers(providers, trt_cache_dir, trt_fp16)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Worker threads sleep when idle instead of spinning: a graph runs several sessions side by side (one per
        # node, in one process or several), and spinning pools starve each other on a small CPU.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        printed = io.StringIO()
        try:
            # onnxruntime prints (not logs) why it fell back when a provider raised while being created.
            with contextlib.redirect_stdout(printed):
                self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=requested)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelLoadError(f'cannot load ONNX model {self.path}: {exc}') from exc
        finally:
            _replay(printed.getvalue())
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()
        self.provider = self.providers[0] if self.providers else CPU
        ep_error = _ep_error(printed.getvalue())  # about the first provider that raised, if one did
        for name in (p if isinstance(p, str) else p[0] for p in requested):
            if name not in self.providers:
                why = f': {ep_error}' if ep_error else " (onnxruntime's own log says why)"
                ep_error = ''
                notes.append(f'{provider_label(name)}: skipped: onnxruntime could not create it{why}')
        self.provider_notes: list[str] = notes
        expected_gpu = providers in ('tensorrt', 'cuda') and self.provider == CPU
        LOG.log(logging.WARNING if expected_gpu else logging.INFO, '%s', self.provider_summary())

    def provider_summary(self) -> str:
        """One line: which provider runs this model for which preference, and why the faster ones do not."""
        line = f'{self.path.name}: running on {provider_label(self.provider)} (providers:={self.preference})'
        return line + ('; ' + '; '.join(self.provider_notes) if self.provider_notes else '')

    def dummy_inputs(self) -> dict[str, np.ndarray]:
        """Zeros of every input's shape and type, dynamic dimensions as 1."""
        inputs = {}
        for tensor in self.session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in tensor.shape]
            inputs[tensor.name] = np.zeros(shape, dtype=_ORT_ONNX_TYPES.get(tensor.type, np.float32))
        return inputs

    def warmup(self, runs: int = 1) -> float:
        """Run the session `runs` times on zeros so the first real frame is not slow (TensorRT builds or loads its
        engine here, CUDA allocates); returns the seconds taken."""
        inputs = self.dummy_inputs()
        started = time.perf_counter()
        for _ in range(max(1, int(runs))):
            self.session.run(None, inputs)
        seconds = time.perf_counter() - started
        LOG.debug('%s: warm-up on %s took %.3f s', self.path.name, provider_label(self.provider), seconds)
        return seconds

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.path.name}: missing input(s) {', '.join(sorted(missing))}")
        return self.session.run(list(outputs) if outputs else None,
                                {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()})


def _replay(printed: str) -> None:
    """Pass on what was printed during session creation (onnxruntime's fallback banner goes to the log instead)."""
    if not printed:
        return
    if 'EP Error' in printed:
        LOG.debug('onnxruntime: %s', printed.strip())
    else:
        sys.stdout.write(printed)


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


def output_channels(model: OnnxModel, input_name: str, output_name: str, model_path: str | Path) -> int:
    """Dimension 1 of `output_name`, after checking that the model has the input and output its manifest names."""
    if input_name not in model.input_names or output_name not in model.output_names:
        raise ModelLoadError(f'{Path(model_path).name} has inputs {model.input_names} and outputs '
                             f'{model.output_names}; its manifest names {input_name!r} and {output_name!r}')
    return model.session.get_outputs()[model.output_names.index(output_name)].shape[1]


class OnnxWrapper:
    """Provider information and warm-up of a model wrapper's `self.model` (an OnnxModel):
    what nodes log and warm up at configure, whatever the wrapper."""

    model: OnnxModel

    @property
    def provider(self) -> str:
        """The execution provider running the model (OnnxModel.provider)."""
        return self.model.provider

    @property
    def provider_notes(self) -> list[str]:
        """Why faster providers were skipped (OnnxModel.provider_notes)."""
        return self.model.provider_notes

    def warmup(self, runs: int = 1) -> float:
        """Run the network on zeros `runs` times (TensorRT engine build, CUDA allocation); seconds taken."""
        return self.model.warmup(runs)
