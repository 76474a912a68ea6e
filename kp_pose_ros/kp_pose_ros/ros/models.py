"""Loading a node's ONNX model by parameter: a bare file name is looked up in the package's models/ directory, any
other value is a path. A missing or corrupt model is logged once, clearly, and the node keeps running without it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from kp_pose_ros.core.onnx_model import ModelLoadError
from kp_pose_ros.paths import model_file

M = TypeVar('M')


def model_path(value: str) -> Path:
    return model_file(value) if Path(value).name == value else Path(value).expanduser()


def load_model(node, factory: Callable[[Path], M], value: str, what: str) -> M | None:
    path = model_path(value)
    try:
        model = factory(path)
    except (ModelLoadError, ValueError, OSError) as exc:
        node.get_logger().error(f'{what}: {exc}. The node keeps running without it; point the parameter at an '
                                f'existing .onnx (with its .yaml manifest) and restart to use it.')
        return None
    node.get_logger().info(f'{what}: loaded {path.name} on {", ".join(getattr(model, "providers", []) or ["CPU"])}')
    return model
