"""sensor_msgs/JointState <-> arrays. Joint order in a message is the publisher's choice, so always go by name."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState


def _finite_vector(values, length: int, name: str) -> list[float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (length,):
        raise ValueError(f'{name} must hold one value per joint ({length}), got shape {arr.shape}')
    if not np.all(np.isfinite(arr)):
        raise ValueError(f'{name} contains NaN or infinite values: {arr.tolist()}')
    return arr.tolist()


def joint_state(names: Sequence[str], positions, stamp: Time, velocities=None, efforts=None) -> JointState:
    """A JointState with one entry per name; velocities and efforts stay empty (unknown) when not given."""
    names = list(names)
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f'joint names must be non-empty strings, got {names}')
    if len(set(names)) != len(names):
        raise ValueError(f'joint names must be unique, got {names}')
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = names
    msg.position = _finite_vector(positions, len(names), 'positions')
    if velocities is not None:
        msg.velocity = _finite_vector(velocities, len(names), 'velocities')
    if efforts is not None:
        msg.effort = _finite_vector(efforts, len(names), 'efforts')
    return msg


def joint_positions(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions of `names`, in that order, from a message that may list joints in any order or hold more."""
    if len(msg.position) != len(msg.name):
        raise ValueError(f'JointState has {len(msg.name)} names but {len(msg.position)} positions')
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise KeyError(f'JointState lacks joints {missing} (it has {list(msg.name)})')
    return np.array([msg.position[index[n]] for n in names], dtype=np.float64)
