"""Loading a node's ONNX model by parameter at configure: a bare file name is looked up in the package's models/
directory, any other value is a path. A missing or corrupt model fails the configure transition with a message
naming the file; a loaded one is warmed up, and the execution provider (and why faster ones were skipped) is logged
and shown in /diagnostics."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from kp_pose_ros.core.onnx_model import PROVIDER_CHOICES, ModelLoadError
from kp_pose_ros.paths import model_file
from kp_pose_ros.ros.lifecycle_node import ConfigureError
from kp_pose_ros.ros.params import Param

M = TypeVar('M')


def inference_params(default_threads: int = 0) -> tuple[Param, ...]:
    """The execution-provider parameters every node with a model declares."""
    return (
        Param('providers', 'auto', 'ONNX Runtime execution provider; auto tries TensorRT, then CUDA, then CPU.',
              choices=PROVIDER_CHOICES),
        Param('threads', default_threads, 'ONNX Runtime intra-op threads on the CPU (0: onnxruntime default).',
              min_value=0, max_value=64),
        Param('trt_engine_cache_dir', '~/.ros/kp_pose_ros/trt_engines', 'Where TensorRT keeps built engines, so '
              'only the first configure on a machine pays the engine build (empty: no cache).'),
        Param('trt_fp16', False, 'Let TensorRT run layers in FP16 (faster; check the accuracy on your data).'),
    )


def model_path(value: str) -> Path:
    return model_file(value) if Path(value).name == value else Path(value).expanduser()


def load_model(node, factory: Callable[..., M], value: str, what: str) -> M:
    """`factory(path, providers=..., threads=..., trt_cache_dir=..., trt_fp16=...)` for the model named by
    `value`, warmed up; ConfigureError naming the file when it is missing or unusable."""
    path = model_path(value)
    p = node.p
    try:
        model = factory(path, providers=p.providers, threads=p.threads,
                        trt_cache_dir=str(Path(p.trt_engine_cache_dir).expanduser()) if p.trt_engine_cache_dir else '',
                        trt_fp16=p.trt_fp16)
        warmup_s = model.warmup()
    except (ModelLoadError, ValueError, OSError) as exc:
        raise ConfigureError(f'{what} {path}: {exc}') from exc
    for note in model.provider_notes:
        node.get_logger().info(f'{what}: {note}')
    node.get_logger().info(f'{what}: {path.name} on {model.provider} (warm-up {warmup_s * 1e3:.0f} ms)')
    node.diagnostics.set_info(f'model.{what.replace(" ", "_")}', str(path))
    node.diagnostics.set_info('provider', model.provider)
    return model
