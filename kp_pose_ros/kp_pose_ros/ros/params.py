"""Node parameters declared from one table, with descriptors, and kept meaning what they say after start-up.

Every node declares its parameters from a table of `Param`s, so `ros2 param describe` shows a description and range,
the README's parameter tables come from the same source, and the in-process runner can check overrides.

Two kinds (issue 7 of the suite's tracker; README "Parameters"):
- structural (the default): model files, providers, URDF, keypoint links, QoS, surface sampling. They are read at
  configure, so a change while the node is configured would be silently ignored; it is refused with the reason
  instead. Change them in the unconfigured state (`ros2 lifecycle set <node> cleanup`), then configure again.
- live (`live=True`): thresholds, windows, rates. A valid new value takes effect on the next message; a bad one is
  refused with a reason (range, choices, or the parameter's own `check`).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    live: bool = False
    choices: Sequence[str] = ()
    min_value: float | int | None = None
    max_value: float | int | None = None
    # Extra validation: returns '' for a valid value, else the reason it is refused.
    check: Callable[[Any], str] | None = None

    @property
    def attribute(self) -> str:
        return self.name.replace('.', '_')

    def descriptor(self) -> ParameterDescriptor:
        kind = 'live' if self.live else 'structural: set it while unconfigured, then configure'
        desc = ParameterDescriptor(description=f'{self.description} [{kind}]')
        constraints = []
        if self.choices:
            constraints.append('one of: ' + ', '.join(self.choices))
        if self.min_value is not None and self.max_value is not None:
            if isinstance(self.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)]
            elif isinstance(self.default, int) and not isinstance(self.default, bool):
                desc.integer_range = [IntegerRange(
                    from_value=int(self.min_value), to_value=int(self.max_value), step=0)]
            constraints.append(f'range [{self.min_value:g}, {self.max_value:g}]')
        desc.additional_constraints = '; '.join(constraints)
        return desc

    def problem(self, value: Any) -> str:
        """Why `value` is not acceptable ('' when it is). rclpy checks types and ranges of set requests itself;
        overrides given at start-up reach only this check, so ranges are checked here too."""
        if self.choices and value not in self.choices:
            return f"'{value}' is not one of: {', '.join(self.choices)}"
        if self.min_value is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and not self.min_value <= value <= self.max_value:
            return f'{value} is outside [{self.min_value:g}, {self.max_value:g}]'
        return self.check(value) if self.check is not None else ''


def declare_params(node, params: Iterable[Param]) -> SimpleNamespace:
    """Declare all `params` on `node` and return their current values.

    A value refused by its `Param` (choices, range, check) raises ValueError naming the parameter, so a bad launch
    file fails at start-up instead of later.
    """
    values = {}
    for p in params:
        value = node.declare_parameter(p.name, p.default, p.descriptor()).value
        problem = p.problem(value)
        if problem:
            raise ValueError(f"parameter '{p.name}': {problem}")
        values[p.attribute] = value
    return SimpleNamespace(**values)


class ParamGuard:
    """The on-set-parameters callback of a node: refuses structural changes while `configured()` is true and bad
    values always, each with a reason. Accepted values are written into `values`, live ones once `on_change` has
    taken them (it refuses a value by raising).

    Uses `add_on_set_parameters_callback`, which Humble's rclpy has (the post-set callbacks came later)."""

    def __init__(self, node, params: Iterable[Param], values: SimpleNamespace, configured: Callable[[], bool],
                 on_change: Callable[[str, Any], None] | None = None):
        self._params = {p.name: p for p in params}
        self._values = values
        self._configured = configured
        self._on_change = on_change
        node.add_on_set_parameters_callback(self._on_set)

    def _on_set(self, parameters) -> SetParametersResult:
        accepted = []
        for parameter in parameters:
            spec = self._params.get(parameter.name)
            if spec is None:  # not ours (e.g. use_sim_time): rclpy handles it
                continue
            reason = spec.problem(parameter.value)
            if not reason and not spec.live and self._configured():
                reason = ('structural parameter, read at configure: deactivate and clean up the node '
                          '(ros2 lifecycle set <node> cleanup), set it, then configure again')
            if reason:
                return SetParametersResult(successful=False, reason=f"{parameter.name}: {reason}")
            accepted.append((spec, parameter.value))
        for spec, value in accepted:
            if spec.live and self._on_change is not None:
                try:  # rebuild what depends on it first: a value it cannot take is refused, not half applied
                    self._on_change(spec.name, value)
                except Exception as exc:  # this callback runs inside rclpy's parameter service: never raise
                    return SetParametersResult(successful=False,
                                               reason=f'{spec.name}: {type(exc).__name__}: {exc}')
            setattr(self._values, spec.attribute, value)
        return SetParametersResult(successful=True)

    def reread(self, node) -> None:
        """Refresh every value from the node (at configure: structural values set while unconfigured)."""
        for name, spec in self._params.items():
            setattr(self._values, spec.attribute, node.get_parameter(name).value)


def markdown_table(params: Iterable[Param]) -> str:
    """The README's table of a node's parameters, from the same `Param`s the node declares."""
    rows = ['| parameter | default | kind | description |', '|---|---|---|---|']
    for p in params:
        limits = f" One of: {', '.join(p.choices)}." if p.choices else (
            f' Range [{p.min_value:g}, {p.max_value:g}].' if p.min_value is not None else '')
        description = (p.description + limits).replace('|', '\\|')
        default = p.default if isinstance(p.default, str) and p.default else repr(p.default)
        rows.append(f"| `{p.name}` | `{default}` | {'live' if p.live else 'structural'} | {description} |")
    return '\n'.join(rows)
