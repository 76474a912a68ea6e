"""Declaring node parameters with descriptions and reading them back as one object.

Every node declares its parameters from a table of `Param`s, so `ros2 param describe` shows a description, the
README's parameter tables can be generated from the same source, and the in-process runner can check overrides.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    read_only: bool = False
    choices: Sequence[str] = ()
    min_value: float | int | None = None
    max_value: float | int | None = None

    def descriptor(self) -> ParameterDescriptor:
        desc = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.choices:
            desc.additional_constraints = 'one of: ' + ', '.join(self.choices)
        if self.min_value is not None and self.max_value is not None:
            if isinstance(self.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)]
            elif isinstance(self.default, int) and not isinstance(self.default, bool):
                desc.integer_range = [IntegerRange(
                    from_value=int(self.min_value), to_value=int(self.max_value), step=0)]
        return desc


def declare_params(node, params: Iterable[Param]) -> SimpleNamespace:
    """Declare all `params` on `node` and return their current values as attributes (dots become underscores).

    A value outside `choices` is refused here with a message naming the parameter, instead of failing later.
    """
    values = {}
    for p in params:
        value = node.declare_parameter(p.name, p.default, p.descriptor()).value
        if p.choices and value not in p.choices:
            raise ValueError(f"parameter '{p.name}' is '{value}', expected one of: {', '.join(p.choices)}")
        values[p.name.replace('.', '_')] = value
    return SimpleNamespace(**values)
