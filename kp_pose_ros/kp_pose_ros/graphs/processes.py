"""A graph with one process per node, as `ros2 launch` starts it: every NodeSpec runs as
`python -m <node module> --autostart --ros-args -r __node:=NAME -r __ns:=/NS -r from:=to --params-file F`, with its
parameters in a generated YAML file. For measuring a graph the way it is deployed (separate processes, DDS between
them), where the in-process runner (graphs/runner.py) composes everything into one executor.

    with GraphProcesses(get_graph('robot_calib').nodes({'camera': 'realsense'})) as graph:
        graph.wait_active(node, executor, timeout_s=60)   # lifecycle get_state of every node
        graph.processes['robot_keypoints'].pid              # for /proc/<pid>/stat
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from kp_pose_ros.graphs.spec import NodeSpec


def full_name(spec: NodeSpec) -> str:
    """'/namespace/name' (or '/name'), the node's fully qualified name."""
    ns = '/' + spec.namespace.strip('/') if spec.namespace.strip('/') else ''
    return f'{ns}/{spec.name}'


def node_command(spec: NodeSpec, params_file: str | Path | None, *, autostart: bool = True,
                 python: str = sys.executable) -> list[str]:
    """The command line that runs `spec` in a process of its own."""
    module = spec.node_class.partition(':')[0]
    cmd = [python, '-m', module]
    if autostart:
        cmd.append('--autostart')
    cmd += ['--ros-args', '-r', f'__node:={spec.name}']
    if spec.namespace.strip('/'):
        cmd += ['-r', f'__ns:=/{spec.namespace.strip("/")}']
    for src, dst in spec.remappings:
        cmd += ['-r', f'{src}:={dst}']
    if params_file is not None:
        cmd += ['--params-file', str(params_file)]
    return cmd


def _plain(value):
    """Parameter values as YAML can write them (numpy scalars, tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, 'item') and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def write_params_file(spec: NodeSpec, path: str | Path) -> Path:
    """`{/ns/name: {ros__parameters: {...}}}`, the file `--params-file` reads (as launch_ros generates it)."""
    path = Path(path)
    params = {k: _plain(v) for k, v in spec.parameters.items()}
    path.write_text(yaml.safe_dump({full_name(spec): {'ros__parameters': params}}, sort_keys=False))
    return path


class GraphProcesses:
    """Starts one process per NodeSpec (in its own session, output to `<log_dir>/<name>.log`) and always stops them:
    SIGINT (what Ctrl-C under launch sends), then SIGTERM, then SIGKILL, each after `stop_timeout_s`."""

    def __init__(self, specs: Sequence[NodeSpec], *, autostart: bool = True, log_dir: str | Path | None = None,
                 env: Mapping[str, str] | None = None, python: str = sys.executable, stop_timeout_s: float = 10.0):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f'node names must be unique within a graph: {names}')
        self.specs = list(specs)
        self.stop_timeout_s = stop_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix='kp_pose_graph_')
        self.log_dir = Path(log_dir) if log_dir else Path(self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.returncodes: dict[str, int] = {}
        env = dict(os.environ if env is None else env)
        try:
            for spec in self.specs:
                params = write_params_file(spec, Path(self._tmp.name) / f'{spec.name}.yaml')
                log = self.log_dir / f'{spec.name}.log'
                self.logs[spec.name] = log
                with open(log, 'wb') as out:
                    self.processes[spec.name] = subprocess.Popen(
                        node_command(spec, params, autostart=autostart, python=python), stdin=subprocess.DEVNULL,
                        stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except BaseException:
            self.close()
            raise

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return '\n'.join(self.logs[name].read_text(errors='replace').splitlines()[-lines:])
        except OSError:
            return ''

    def exited(self) -> dict[str, int]:
        """{name: exit code} of the node processes that have ended."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def states(self, node, executor, timeout_s: float = 2.0) -> dict[str, str]:
        """Each node's lifecycle state label ('unconfigured', 'active', ...; 'unknown' when its get_state service
        does not answer within `timeout_s`), asked from `node`, which `executor` spins."""
        clients = self._state_clients(node)
        try:
            return self._ask_states(clients, executor, timeout_s)
        finally:
            for client in clients.values():
                node.destroy_client(client)

    def _state_clients(self, node) -> dict:
        from lifecycle_msgs.srv import GetState

        return {s.name: node.create_client(GetState, f'{full_name(s)}/get_state') for s in self.specs}

    @staticmethod
    def _ask_states(clients: dict, executor, timeout_s: float) -> dict[str, str]:
        from lifecycle_msgs.srv import GetState

        futures, states = {}, {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(states) < len(clients):
            for name, client in clients.items():
                if name not in futures and client.service_is_ready():
                    futures[name] = client.call_async(GetState.Request())
            for name, future in futures.items():
                if name not in states and future.done() and future.result() is not None:
                    states[name] = future.result().current_state.label
            executor.spin_once(timeout_sec=0.05)
        return {name: states.get(name, 'unknown') for name in clients}

    def wait_active(self, node, executor, timeout_s: float = 60.0, poll_s: float = 0.5) -> dict[str, str]:
        """Block until every node reports 'active'; raises RuntimeError (with the log tail) when a process exits or
        the timeout passes first. Returns the states."""
        deadline = time.monotonic() + timeout_s
        clients = self._state_clients(node)  # made once: each new client would wait for discovery again
        try:
            while True:
                dead = self.exited()
                if dead:
                    name, code = next(iter(dead.items()))
                    raise RuntimeError(f'node process {name} exited with code {code} while starting:\n'
                                       f'{self.log_tail(name)}')
                states = self._ask_states(clients, executor, min(2.0, max(0.1, deadline - time.monotonic())))
                if all(s == 'active' for s in states.values()):
                    return states
                if time.monotonic() >= deadline:
                    waiting = {n: s for n, s in states.items() if s != 'active'}
                    tails = '\n'.join(f'--- {n}:\n{self.log_tail(n)}' for n in waiting)
                    raise RuntimeError(f'not active after {timeout_s:g} s: {waiting}\n{tails}')
                end = time.monotonic() + poll_s
                while time.monotonic() < end:
                    executor.spin_once(timeout_sec=0.05)
        finally:
            for client in clients.values():
                node.destroy_client(client)

    def close(self) -> dict[str, int]:
        """Stop every process (SIGINT, SIGTERM, SIGKILL to its process group, as needed); their exit codes."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            running = [p for p in self.processes.values() if p.poll() is None]
            if not running:
                break
            for p in running:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + self.stop_timeout_s
            for p in running:
                try:
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        self.returncodes = {name: p.returncode for name, p in self.processes.items()}
        self._tmp.cleanup()
        return self.returncodes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def process_cpu_s(pid: int, descendants: bool = True) -> float:
    """CPU seconds (user + system) used so far by `pid` (all its threads) and, with `descendants`, its live child
    processes and theirs, from /proc; 0.0 once it is gone. (A process that started a graph has the nodes as children:
    pass descendants=False for its own share.)"""
    ticks = os.sysconf('SC_CLK_TCK')
    total = 0.0
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            stat = Path(f'/proc/{p}/stat').read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(')') + 2:].split()  # after 'pid (comm) '; fields[0] is the state (field 3)
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
        if not descendants:
            break
        for task in Path(f'/proc/{p}/task').glob('*/children'):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return total


@contextmanager
def running_graph(specs: Sequence[NodeSpec], *, log_dir: str | Path | None = None, timeout_s: float = 120.0):
    """The graph as processes, every node active, and a fresh rclpy context and executor beside it for observers:
    yields (context, executor, graph, states). Start-up is over before the caller measures anything."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.context.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        with GraphProcesses(specs, log_dir=log_dir) as graph:
            starter = rclpy.create_node('graph_starter', context=context)
            executor.add_node(starter)
            try:
                states = graph.wait_active(starter, executor, timeout_s=timeout_s)
            finally:
                executor.remove_node(starter)
                starter.destroy_node()
            yield context, executor, graph, states
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)
