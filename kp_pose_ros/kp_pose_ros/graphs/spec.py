"""The data a pipeline graph is made of. A graph module builds these from launch-argument strings; the launch files
turn them into launch_ros Node actions and the in-process runner into rclpy nodes in one executor."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence


@dataclass(frozen=True)
class Argument:
    """A launch argument (`name:=value`), with the default and description `ros2 launch -s` shows."""
    name: str
    default: str
    description: str
    choices: Sequence[str] = ()


@dataclass(frozen=True)
class NodeSpec:
    """One node: `executable` for `ros2 run`/launch, `node_class` ('module:Class') for in-process composition."""
    name: str
    executable: str
    node_class: str
    namespace: str = ''
    parameters: Mapping[str, Any] = field(default_factory=dict)
    remappings: Sequence[tuple[str, str]] = ()


# Arguments every graph has (appended to its own unless it defines one of the same name): how launch files and the
# in-process runner bring the lifecycle nodes up, and whether launch also starts RViz with the graph's config.
COMMON_ARGUMENTS = (
    Argument('autostart', 'true', 'Bring every node to active (configure, then activate) as it starts; false: leave '
             'them unconfigured for `ros2 lifecycle set` or a lifecycle manager.', choices=('true', 'false')),
    Argument('rviz', 'false', 'ros2 launch only: also start RViz 2 with this graph\'s view '
             '(config/rviz/<graph>.rviz).', choices=('true', 'false')),
)


@dataclass(frozen=True)
class Graph:
    """A pipeline: its launch arguments (its own, then COMMON_ARGUMENTS) and how they build its nodes."""
    name: str
    description: str
    arguments: Sequence[Argument]
    build: Callable[[Mapping[str, str]], Sequence[NodeSpec]]

    def __post_init__(self):
        own = tuple(self.arguments)
        names = {a.name for a in own}
        object.__setattr__(self, 'arguments', own + tuple(a for a in COMMON_ARGUMENTS if a.name not in names))

    def resolve(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Argument values: defaults updated by `overrides`; unknown names and values outside `choices` refused."""
        values = {a.name: a.default for a in self.arguments}
        for key, value in (overrides or {}).items():
            if key not in values:
                raise ValueError(f"graph '{self.name}' has no argument '{key}'; arguments: {', '.join(values)}")
            values[key] = str(value)
        for a in self.arguments:
            if a.choices and values[a.name] not in a.choices:
                raise ValueError(f"argument '{a.name}' is '{values[a.name]}', expected one of: {', '.join(a.choices)}")
        return values

    def nodes(self, overrides: Mapping[str, str] | None = None) -> list[NodeSpec]:
        return list(self.build(self.resolve(overrides)))


def as_bool(text: str) -> bool:
    """Launch-argument truth values as ROS 2 launch spells them."""
    lowered = text.strip().lower()
    if lowered in ('true', '1', 'yes', 'on'):
        return True
    if lowered in ('false', '0', 'no', 'off'):
        return False
    raise ValueError(f"'{text}' is not a boolean (true/false)")
