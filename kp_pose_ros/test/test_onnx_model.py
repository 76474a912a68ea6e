"""ONNX Runtime sessions: the provider chain (TensorRT -> CUDA -> CPU) with a reason for every provider skipped,
warm-up on every committed model, and clear errors for bad model files. Runs on a machine without a GPU; GPU
situations are simulated by replacing the probes (device nodes, libraries) or onnxruntime's session."""
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from kp_pose_ros.core import onnx_model
from kp_pose_ros.core.onnx_model import CPU, CUDA, TENSORRT, ModelLoadError, OnnxModel, plan_providers

MODELS = sorted((Path(__file__).resolve().parents[1] / 'models').glob('*.onnx'))
JOINTS = next(p for p in MODELS if p.name == 'robot_joints_panda.onnx')


def test_models_are_committed():
    assert len(MODELS) >= 4


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(onnx_model, '_gpu_present', lambda: False)


@pytest.fixture
def gpu_with_libraries(monkeypatch):
    """A GPU and every library present, as far as the probes can tell; onnxruntime's GPU build listed."""
    monkeypatch.setattr(onnx_model, '_gpu_present', lambda: True)
    monkeypatch.setattr(onnx_model, '_preload_gpu_libraries', lambda: None)
    monkeypatch.setattr(onnx_model, '_nvinfer_error', lambda: None)
    monkeypatch.setattr(onnx_model, '_provider_library_error', lambda kind: None)
    monkeypatch.setattr(ort, 'get_available_providers', lambda: [TENSORRT, CUDA, CPU])


class _CpuOnlySession:
    """onnxruntime.InferenceSession as it behaves when it cannot create the GPU providers it was asked for: it
    falls back to the CPU by itself. Records what it was asked for; `printed` is what onnxruntime prints then."""
    requested = None
    printed = ''

    def __init__(self, path, sess_options=None, providers=None):
        type(self).requested = providers
        if self.printed:
            print(self.printed)
        self._session = _REAL_SESSION(path, sess_options=sess_options, providers=[CPU])

    def __getattr__(self, name):
        return getattr(self._session, name)


_REAL_SESSION = ort.InferenceSession


def test_auto_without_gpu_runs_on_cpu_and_says_why(no_gpu, caplog):
    with caplog.at_level(logging.INFO, logger='kp_pose_ros.core.onnx_model'):
        model = OnnxModel(JOINTS, 'auto')
    assert model.provider == CPU and model.providers == [CPU]
    assert len(model.provider_notes) == 2
    trt, cuda = model.provider_notes
    assert trt.startswith('TensorRT: skipped: ') and cuda.startswith('CUDA: skipped: ')
    available = ort.get_available_providers()
    for note, provider in ((trt, TENSORRT), (cuda, CUDA)):
        reason = 'no NVIDIA GPU' if provider in available else 'not in this onnxruntime build'
        assert reason in note
    logged = [r for r in caplog.records if 'running on CPU' in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.INFO
    assert 'robot_joints_panda.onnx' in logged[0].getMessage() and 'TensorRT: skipped' in logged[0].getMessage()


def test_auto_on_this_machine_names_a_reason_for_each_skipped_provider():
    """The real probes, whatever this machine has: every provider not running has a note, and only those."""
    model = OnnxModel(JOINTS, 'auto')
    skipped = {n.split(':')[0] for n in model.provider_notes}
    chain = ['TensorRT', 'CUDA', 'CPU']
    running = chain.index(onnx_model.provider_label(model.provider))
    assert skipped == set(chain[:running])


def test_cpu_preference_has_no_notes(caplog):
    with caplog.at_level(logging.INFO, logger='kp_pose_ros.core.onnx_model'):
        model = OnnxModel(JOINTS, 'cpu')
    assert model.provider == CPU and model.provider_notes == []
    assert 'running on CPU (providers:=cpu)' in caplog.text


def test_cpu_only_onnxruntime_build(monkeypatch):
    monkeypatch.setattr(onnx_model, '_gpu_present', lambda: True)
    monkeypatch.setattr(ort, 'get_available_providers', lambda: [CPU])
    providers, notes = plan_providers('auto')
    assert providers == [CPU]
    assert all('not in this onnxruntime build' in n and 'onnxruntime-gpu' in n for n in notes) and len(notes) == 2


def test_missing_gpu_libraries_are_named(monkeypatch):
    monkeypatch.setattr(onnx_model, '_gpu_present', lambda: True)
    monkeypatch.setattr(onnx_model, '_preload_gpu_libraries', lambda: None)
    monkeypatch.setattr(ort, 'get_available_providers', lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(onnx_model.ctypes, 'CDLL', _no_library)
    providers, notes = plan_providers('tensorrt')
    assert notes[0].startswith('TensorRT: skipped: TensorRT libraries not loadable') and 'libnvinfer' in notes[0]
    if Path(ort.__file__).parent.joinpath('capi', 'libonnxruntime_providers_cuda.so').is_file():
        assert providers == [CPU]
        assert notes[1].startswith('CUDA: skipped: CUDA libraries not loadable: ') and 'libcublas' in notes[1]
    else:  # the CPU onnxruntime (the Jazzy stack's) has no CUDA provider library to probe: CUDA stays planned
        assert providers == [CUDA, CPU] and len(notes) == 1


def _no_library(name, *args, **kwargs):
    """ctypes.CDLL on a machine without CUDA and TensorRT: onnxruntime's own bridge library loads, nothing else."""
    if 'providers_shared' in str(name):
        return object()
    missing = 'libnvinfer.so.10' if 'nvinfer' in str(name) else 'libcublas.so.12'
    raise OSError(f'{missing}: cannot open shared object file: No such file or directory')


def test_gpu_present_but_cuda_not_created(gpu_with_libraries, monkeypatch, caplog):
    monkeypatch.setattr(ort, 'InferenceSession', _CpuOnlySession)
    with caplog.at_level(logging.INFO, logger='kp_pose_ros.core.onnx_model'):
        model = OnnxModel(JOINTS, 'cuda')
    assert _CpuOnlySession.requested == [CUDA, CPU]
    assert model.provider == CPU
    assert model.provider_notes == ["CUDA: skipped: onnxruntime could not create it (onnxruntime's own log says why)"]
    # providers:=cuda asked for a GPU: running on the CPU is worth a warning.
    assert any(r.levelno == logging.WARNING and 'running on CPU' in r.getMessage() for r in caplog.records)


def test_tensorrt_options_and_printed_fallback_reason(gpu_with_libraries, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ort, 'InferenceSession', _CpuOnlySession)
    monkeypatch.setattr(_CpuOnlySession, 'printed',
                        '*************** EP Error ***************\n'
                        'EP Error /onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void '
                        'onnxruntime::python::RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const '
                        'onnxruntime::ProviderOptions&) Please install TensorRT libraries.\n'
                        " when using ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']\n"
                        "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.\n")
    cache = tmp_path / 'engines'
    model = OnnxModel(JOINTS, 'auto', trt_cache_dir=cache, trt_fp16=True)
    trt, cuda, cpu = _CpuOnlySession.requested
    assert trt == (TENSORRT, {'trt_fp16_enable': True, 'trt_engine_cache_enable': True,
                              'trt_engine_cache_path': str(cache)})
    assert cache.is_dir() and (cuda, cpu) == (CUDA, CPU)
    assert model.provider_notes[0] == 'TensorRT: skipped: onnxruntime could not create it: Please install TensorRT ' \
                                      'libraries.'
    assert model.provider_notes[1].startswith('CUDA: skipped: onnxruntime could not create it')
    assert 'EP Error' not in capsys.readouterr().out  # onnxruntime's banner went to the debug log


def test_tensorrt_without_cache_dir_has_no_cache_options():
    assert onnx_model.tensorrt_options('', False) == {'trt_fp16_enable': False}


def test_preference_chains(gpu_with_libraries):
    names = lambda providers: [p if isinstance(p, str) else p[0] for p in providers]  # noqa: E731
    assert names(plan_providers('auto')[0]) == [TENSORRT, CUDA, CPU]
    assert names(plan_providers('tensorrt')[0]) == [TENSORRT, CUDA, CPU]
    assert plan_providers('cuda') == ([CUDA, CPU], [])
    assert plan_providers('cpu') == ([CPU], [])
    assert onnx_model.resolve_providers('auto') == [TENSORRT, CUDA, CPU]


def test_unknown_preference_raises():
    with pytest.raises(ValueError, match="unknown execution provider 'gpu'.*auto, tensorrt, cuda, cpu"):
        OnnxModel(JOINTS, 'gpu')


@pytest.mark.parametrize('path', MODELS, ids=lambda p: p.name)
def test_warmup_on_every_committed_model(path):
    model = OnnxModel(path, 'cpu', threads=1)
    inputs = model.dummy_inputs()
    assert set(inputs) == set(model.input_names)
    assert all(a.size > 0 and not np.any(a) for a in inputs.values())
    seconds = model.warmup(runs=2)
    assert 0.0 < seconds < 30.0


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    missing = tmp_path / 'absent.onnx'
    with pytest.raises(ModelLoadError, match='model file not found: .*absent.onnx'):
        OnnxModel(missing)
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'not an onnx model')
    with pytest.raises(ModelLoadError, match='cannot load ONNX model .*corrupt.onnx'):
        OnnxModel(corrupt, 'auto')


def test_wrappers_expose_provider_and_warmup(no_gpu):
    from kp_pose_ros.robot.keypoints import RobotKeypointDetector
    from kp_pose_ros.robot.lifting import DiffusionLifter, JointRegressor, RegressionLifter

    models = Path(JOINTS).parent
    wrappers = [RobotKeypointDetector(models / 'robot_keypoints_panda.onnx', 'auto', 1, trt_cache_dir='',
                                      trt_fp16=True),
                DiffusionLifter(models / 'robot_lifter_panda.onnx', 'auto', trt_fp16=True),
                RegressionLifter(models / 'robot_lifter_regression_panda.onnx', providers='cpu'),
                JointRegressor(models / 'robot_joints_panda.onnx', 'cpu', 1, trt_cache_dir='', trt_fp16=False)]
    for wrapper in wrappers:
        assert wrapper.provider == CPU
        assert wrapper.provider_notes == wrapper.model.provider_notes
        assert wrapper.warmup() > 0.0
    assert len(wrappers[0].provider_notes) == 2 and wrappers[3].provider_notes == []
