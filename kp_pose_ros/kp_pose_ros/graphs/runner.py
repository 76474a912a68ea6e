"""In-process runner: every node of a graph composed into one process and one executor (`kp-pose run`, the tests,
`kp-pose demo --in-process`), built from the same NodeSpecs the launch files use, and brought to active as the
launch files do with autostart:=true. graphs/processes.py runs the same graph one process per node, as launch does."""
from __future__ import annotations

import time
from importlib import import_module
from typing import Mapping, Sequence

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.spec import NodeSpec, as_bool
from kp_pose_ros.ros.lifecycle_node import bring_up


def load_class(path: str):
    """'package.module:Class' -> the class."""
    module, _, cls = path.partition(':')
    return getattr(import_module(module), cls)


def create_node(spec: NodeSpec, context):
    """Instantiate one node as `ros2 run` with `-r __node:= -r __ns:= -r from:=to` and the spec's parameters would.

    A parameter the node does not declare is an error here (launch would silently ignore it)."""
    cli = ['--ros-args', '-r', f'__node:={spec.name}']
    if spec.namespace:
        cli += ['-r', f'__ns:={spec.namespace}']
    for src, dst in spec.remappings:
        cli += ['-r', f'{src}:={dst}']
    overrides = [Parameter(k, value=v) for k, v in spec.parameters.items()]
    node = load_class(spec.node_class)(context=context, cli_args=cli, parameter_overrides=overrides,
                                       use_global_arguments=False)
    unknown = [k for k in spec.parameters if not node.has_parameter(k)]
    if unknown:
        node.destroy_node()
        raise ValueError(f"node '{spec.name}' does not declare parameter(s): {', '.join(unknown)}")
    return node


class GraphRun:
    """The nodes of one graph in one executor; a context manager that always tears down what it created."""

    def __init__(self, specs: Sequence[NodeSpec], context=None, autostart: bool = True):
        self._own_context = context is None
        if self._own_context:
            context = rclpy.context.Context()
            rclpy.init(context=context)
        self.context = context
        self.nodes = []
        try:
            for spec in specs:
                self.nodes.append(create_node(spec, context))
        except Exception:
            self.close()
            raise
        # Like component_container: one executor thread, so every callback has finished when spin_once returns and
        # nodes can be destroyed at any point between spins (destroying a node also stops its worker threads, after
        # the item each is working on).
        self.executor = SingleThreadedExecutor(context=context)
        for node in self.nodes:
            self.executor.add_node(node)
        # Nodes that did not reach active stay alive and unconfigured (their log says why), as under launch.
        self.not_active = [n.get_name() for n in self.nodes if autostart and not bring_up(n)]

    def node(self, name: str):
        return next(n for n in self.nodes if n.get_name() == name)

    def spin_for(self, seconds: float | None = None) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        while self.context.ok() and (deadline is None or time.monotonic() < deadline):
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        executor = getattr(self, 'executor', None)
        if executor is not None:
            executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        self.nodes = []
        if self._own_context:
            rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_graph(name: str, overrides: Mapping[str, str] | None = None, context=None) -> GraphRun:
    graph = get_graph(name)
    return GraphRun(graph.nodes(overrides), context=context,
                    autostart=as_bool(graph.resolve(overrides)['autostart']))
