"""What the through-graph throughput benchmarks (bench/throughput.py: robot_calib, bench/object_throughput.py:
object_pose) share, so both measure the same way:

- Bags: rendered once into build/bench/ (MCAP) with their render parameters in the metadata (custom_data) and kept
  while those parameters stay the same; written to a sibling folder and renamed, so a half-written bag is never taken
  for a cached one. Header stamps exactly 1/rate apart (to the nanosecond) from BASE_STAMP_NS; the RealSense topic
  set (colour, aligned depth, both camera_info) as sim_camera publishes it, and the driver's /tf_static.
- The graph: one process per node (graphs/processes.py, as `ros2 launch` starts it), every node active before
  anything is timed; an observer node here keeps each node's last /diagnostics status.
- Timing: the bag's timed stream is played once at rate 1.0 from this process (ros/bags.py BagPlayer), recording the
  monotonic time each colour image was handed to its publisher; the caller's subscriber records when each output
  (header.stamp = the image's stamp) arrives; latency = receive time - publish time of the image with that stamp.
- CPU: per node process its utime + stime over the play window (/proc) divided by the window's wall time (100 % =
  one core), next to this process's (the player) and everything else on the machine (/proc/stat), so a busy
  machine shows.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

RATE_HZ = 30.0
BASE_STAMP_NS = 1_700_000_000 * 10**9
CUSTOM_DATA_KEY = 'kp_pose_render'
TF_STATIC = '/tf_static'
STEADY = (0.1, 0.9)  # share of the play window over which rates are taken (start-up and tail left out)


def bench_dir() -> Path:
    return Path.cwd() / 'build' / 'bench'


def frames_from_env(default: int) -> int:
    return int(os.environ.get('KP_POSE_THROUGHPUT_FRAMES', str(default)))


def stamp_ns(index: int, rate_hz: float = RATE_HZ) -> int:
    """Header stamp of frame `index`: BASE_STAMP_NS + index / rate, rounded to the nearest nanosecond."""
    return BASE_STAMP_NS + int(round(index * 1e9 / rate_hz))


def camera_topics(camera: str = 'realsense') -> dict[str, str]:
    """The RealSense topic set for a camera preset: colour, its info, aligned depth, its info."""
    from kp_pose_ros.graphs.cameras import camera_preset

    preset = camera_preset(camera)
    depth_info = preset.depth_topic.rsplit('/', 1)[0] + '/camera_info'
    return {'color': preset.color_topic, 'color_info': preset.camera_info_topic, 'depth': preset.depth_topic,
            'depth_info': depth_info, 'optical_frame': preset.optical_frame, 'root_frame': preset.root_frame}


# --- the pre-rendered bags -----------------------------------------------------------------------------------------

def read_bag_params(path: str | Path, key: str = CUSTOM_DATA_KEY):
    """The render parameters (or another `key`'s JSON) stored in a bag's metadata (custom_data), or None."""
    import yaml

    try:
        meta = yaml.safe_load((Path(path) / 'metadata.yaml').read_text())
        return json.loads(meta['rosbag2_bagfile_information']['custom_data'][key])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def cached_bag(path: str | Path, params: dict, write: Callable[[Path], object]) -> tuple[Path, bool]:
    """The bag at `path` when it was rendered with `params`, else `write(path)` first; (path, rendered now)."""
    path = Path(path)
    if read_bag_params(path) == params:
        return path, False
    write(path)
    return path, True


class BagOut:
    """An open bag being written: connections by topic, messages (rclpy objects or CDR bytes) by topic."""

    def __init__(self, writer):
        from kp_pose_ros.ros.bags import InstalledTypes

        self.writer, self.installed, self.connections = writer, InstalledTypes(), {}

    def add(self, topic: str, msgtype: str, qos) -> None:
        from kp_pose_ros.ros.bags import bag_qos

        msgdef, rihs01 = self.installed.msgdef(msgtype)
        self.connections[topic] = self.writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=rihs01,
                                                             offered_qos_profiles=[bag_qos(qos)])

    def write(self, topic: str, t_ns: int, msg) -> None:
        from rclpy.serialization import serialize_message

        data = msg if isinstance(msg, bytes) else serialize_message(msg)
        self.writer.write(self.connections[topic], t_ns, data)

    def set_data(self, key: str, value) -> None:
        """JSON in the metadata's custom_data (read back with read_bag_params(path, key))."""
        self.writer.set_custom_data(key, json.dumps(value, sort_keys=True))


@contextmanager
def bag_writer(path: str | Path, params: dict):
    """A BagOut on a new MCAP bag with `params` as its render parameters: at `path` once the block ends, nowhere
    if it raises."""
    from rosbags.rosbag2 import Writer

    from kp_pose_ros.ros.bags import BAG_VERSION, STORAGES

    path = Path(path)
    partial = path.with_name(path.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(partial, version=BAG_VERSION, storage_plugin=STORAGES['mcap'])
    writer.set_custom_data(CUSTOM_DATA_KEY, json.dumps(params, sort_keys=True))
    writer.open()
    try:
        yield BagOut(writer)
    except BaseException:
        writer.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    writer.close()
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


def add_camera(bag: BagOut, topics: dict[str, str]) -> None:
    """The RealSense topics (QoS as the driver and sim_camera offer them) and the latched /tf_static."""
    from kp_pose_ros.ros.qos import LATCHED_QOS, qos_profile

    image_qos = qos_profile('reliable', 5)
    bag.add(topics['color'], 'sensor_msgs/msg/Image', image_qos)
    bag.add(topics['color_info'], 'sensor_msgs/msg/CameraInfo', image_qos)
    bag.add(topics['depth'], 'sensor_msgs/msg/Image', image_qos)
    bag.add(topics['depth_info'], 'sensor_msgs/msg/CameraInfo', image_qos)
    bag.add(TF_STATIC, 'tf2_msgs/msg/TFMessage', LATCHED_QOS)


def write_driver_tf(bag: BagOut, topics: dict[str, str], t_ns: int) -> None:
    """/tf_static camera_link -> camera_color_frame -> camera_color_optical_frame, as the driver publishes it."""
    from tf2_msgs.msg import TFMessage

    from kp_pose_ros.nodes.sim_camera import driver_static_transforms
    from kp_pose_ros.ros.stamps import ns_to_stamp

    optical = topics['optical_frame']
    name = optical[:-len('_color_optical_frame')] if optical.endswith('_color_optical_frame') else 'camera'
    bag.write(TF_STATIC, t_ns, TFMessage(transforms=driver_static_transforms(name, ns_to_stamp(t_ns))))


def write_camera_frame(bag: BagOut, topics: dict[str, str], t_ns: int, frame, camera):
    """A rendered frame as the driver's colour image, camera_info, aligned depth and its camera_info, in that order,
    stamped `t_ns`; returns their header."""
    from std_msgs.msg import Header

    from kp_pose_ros.nodes.sim_camera import camera_messages
    from kp_pose_ros.ros.stamps import ns_to_stamp

    header = Header(stamp=ns_to_stamp(t_ns), frame_id=topics['optical_frame'])
    color, info, depth = camera_messages(frame, camera, header)
    bag.write(topics['color'], t_ns, color)
    bag.write(topics['color_info'], t_ns, info)
    bag.write(topics['depth'], t_ns, depth)
    bag.write(topics['depth_info'], t_ns, info)
    return header


# --- CPU accounting ------------------------------------------------------------------------------------------------

def system_busy_s() -> float:
    """CPU seconds all processes on the machine have used (busy jiffies of /proc/stat's 'cpu' line)."""
    fields = [int(v) for v in Path('/proc/stat').read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
    return busy / os.sysconf('SC_CLK_TCK')


def machine_info() -> dict:
    model = platform.processor() or ''
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.lower().startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
    return {'cpu_model': model, 'cores_usable': usable, 'cores_total': os.cpu_count(), 'arch': platform.machine(),
            'loadavg_1m_at_start': round(load[0], 2), 'python': platform.python_version()}


class CpuWindow:
    """CPU use from construction to `stop()`: {node: % of one core} plus graph_total, benchmark_player (this
    process) and other_processes (the rest of the machine)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.start = self._sample()

    def _sample(self):
        from kp_pose_ros.graphs.processes import process_cpu_s

        return ({name: process_cpu_s(pid) for name, pid in self.pids.items()},
                process_cpu_s(os.getpid(), descendants=False), system_busy_s(), time.monotonic())

    def stop(self) -> tuple[dict[str, float], float]:
        """(CPU shares, window wall time in seconds)."""
        (nodes0, self0, sys0, t0), (nodes1, self1, sys1, t1) = self.start, self._sample()
        wall = t1 - t0
        cpu = {name: 100.0 * (nodes1[name] - nodes0[name]) / wall for name in self.pids}
        cpu['graph_total'] = sum(cpu.values())
        cpu['benchmark_player'] = 100.0 * (self1 - self0) / wall
        ours = sum(nodes1[n] - nodes0[n] for n in self.pids) + (self1 - self0)
        cpu['other_processes'] = max(0.0, 100.0 * ((sys1 - sys0) - ours) / wall)
        return cpu, wall


# --- the measurement -----------------------------------------------------------------------------------------------

def _cdr_stamp_ns(data) -> int:
    """header.stamp of a little-endian CDR message whose first field is a std_msgs/Header."""
    raw = bytes(data[:12])
    if raw[1] != 1:
        raise ValueError('expected little-endian CDR')
    return int.from_bytes(raw[4:8], 'little', signed=True) * 10**9 + int.from_bytes(raw[8:12], 'little')


class _TimedPublisher:
    """Wraps a BagPlayer publisher: records (header stamp, monotonic time just before publish) of each message."""

    def __init__(self, inner, log: dict):
        self.inner, self.log = inner, log

    def publish(self, msg):
        now = time.monotonic()
        self.inner.publish(msg)
        stamp = _cdr_stamp_ns(msg) if isinstance(msg, (bytes, bytearray, memoryview)) else \
            msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.log.setdefault(stamp, now)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def rounded(x, nd=1):
    return None if x is None else round(float(x), nd)


def summarize(published: dict[int, float], received: dict[int, float], cpu: dict[str, float],
              outputs: str = 'estimates') -> dict:
    """The headline numbers from {stamp: publish time} and {stamp: receive time} (monotonic seconds) of the graph's
    `outputs` (one message per image that came through)."""
    matched = sorted(s for s in received if s in published)
    latencies = np.array([(received[s] - published[s]) * 1e3 for s in matched])
    pub_times = sorted(published.values())
    out = {'images_published': len(published), f'{outputs}_received': len(matched),
           f'unmatched_{outputs}': len(received) - len(matched),
           'dropped_frames': len(published) - len(matched),
           'dropped_percent': rounded(100.0 * (len(published) - len(matched)) / len(published), 1)
           if published else None,
           'latency_ms': {'median': rounded(percentile(latencies, 50)), 'p95': rounded(percentile(latencies, 95)),
                          'max': rounded(latencies.max() if len(latencies) else None),
                          'mean': rounded(latencies.mean() if len(latencies) else None)}}
    if len(pub_times) >= 2:
        start, span = pub_times[0], pub_times[-1] - pub_times[0]
        lo, hi = start + STEADY[0] * span, start + STEADY[1] * span
        n_in = sum(lo <= t < hi for t in pub_times)
        n_out = sum(lo <= received[s] < hi for s in matched)
        out['input_rate_hz'] = rounded(n_in / (hi - lo), 2) if hi > lo else None
        out['output_rate_hz'] = rounded(n_out / (hi - lo), 2) if hi > lo else None
        out['steady_window_s'] = rounded(hi - lo, 2)
    out['cpu_percent'] = {k: rounded(v) for k, v in cpu.items()}
    return out


def diagnostics_detail(statuses: dict[str, dict[str, str]]) -> dict:
    """Per node: provider, per-stage latency median/p95 (ms), drops and errors, from its last /diagnostics status."""
    detail = {}
    for name, values in sorted(statuses.items()):
        stages = {}
        for key, value in values.items():
            if key.startswith('latency.') and key.endswith('.median_ms'):
                stage = key[len('latency.'):-len('.median_ms')]
                stages[stage] = {'median_ms': _num(value), 'p95_ms': _num(values.get(f'latency.{stage}.p95_ms')),
                                 'samples': _num(values.get(f'latency.{stage}.samples'))}
        detail[name.rsplit('/', 1)[-1]] = {
            'provider': values.get('provider'), 'state': values.get('state'), 'stages': stages,
            'dropped': {k[len('dropped.'):]: _num(v) for k, v in values.items()
                        if k.startswith('dropped.') and k != 'dropped.rate_hz'},
            'errors': {k[len('errors.'):]: v for k, v in values.items() if k.startswith('errors.')},
            'message': values.get('_message')}
    return detail


def _num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def process_table(results: dict) -> list[str]:
    """The report's table of CPU per process, with each node's provider and stage medians."""
    lines = ['| process | CPU % (of one core) | provider | stage medians (ms) |', '|---|---|---|---|']
    for name, pct in results['cpu_percent'].items():
        node = results['nodes'].get(name, {})
        stages = ', '.join(f"{k} {v['median_ms']}" for k, v in node.get('stages', {}).items())
        lines.append(f"| {name} | {pct} | {node.get('provider') or ''} | {stages} |")
    return lines


@dataclass
class TimedPlay:
    published: dict[int, float]  # image stamp -> monotonic publish time
    cpu: dict[str, float]        # CpuWindow shares over the play window
    wall_s: float                # the play window
    stats: object                # ros/bags.py PlayStats, None if the player failed


class GraphBench:
    """A graph running as processes (running_graph) with this benchmark's observer node beside it."""

    def __init__(self, name: str, specs, context, executor, graph, states):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from kp_pose_ros.graphs.processes import full_name

        self.name, self.specs, self.context, self.executor, self.graph = name, list(specs), context, executor, graph
        self.states = states
        self.full_names = {full_name(s): s.name for s in self.specs}
        self.statuses: dict[str, dict[str, str]] = {}  # full node name -> last /diagnostics values (+ '_message')
        self.status_times: dict[str, float] = {}
        self.node = rclpy.create_node(name, context=context)
        executor.add_node(self.node)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self._players = []

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name in self.full_names:
                values = {kv.key: kv.value for kv in status.values}
                values['_message'] = status.message
                self.statuses[status.name] = values
                self.status_times[status.name] = time.monotonic()

    def spin_until(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def _player(self, suffix: str, bag, topics: Sequence[str]):
        import rclpy

        from kp_pose_ros.ros.bags import BagPlayer

        node = rclpy.create_node(f'{self.name}_{suffix}', context=self.context)
        try:
            player = BagPlayer(node, bag, topics=topics)
        except BaseException:
            node.destroy_node()
            raise
        self._players.append(player)
        return player

    def play_latched(self, bag, topics: Sequence[str]) -> None:
        """Publish latched `topics` of the bag (/tf_static, /robot_description), as a robot's bringup does."""
        self._player('latched', bag, topics).run()

    def play_timed(self, bag, topics: Sequence[str], image_topic: str, needed: Sequence[str],
                   received: dict[int, float], drain_s: float = 3.0, outputs: Sequence[str] = ()) -> TimedPlay:
        """Play `topics` once in real time, timing `image_topic`; first wait until the graph subscribes to each of
        `needed` and this observer sees a publisher of each of `outputs` (else a loaded machine can play the whole
        bag before the observer's subscriptions are matched, and every output is lost); afterwards until the outputs
        in flight have come into `received` (the caller's subscriber fills it as {stamp: monotonic receive time}) and
        every node has sent a fresh /diagnostics status."""
        play = self._player('player', bag, topics)
        published: dict[int, float] = {}
        for out in play.outputs.values():
            if out.topic == image_topic and not isinstance(out.publisher, _TimedPublisher):
                out.publisher = _TimedPublisher(out.publisher, published)
        waits = [o.publisher for o in play.outputs.values() if o.topic in needed]
        if not self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in waits), 30.0):
            raise RuntimeError(f'the graph did not subscribe to {", ".join(needed)} within 30 s')
        if not self.spin_until(lambda: all(self.node.count_publishers(t) > 0 for t in outputs), 30.0):
            raise RuntimeError(f'no publisher of {", ".join(outputs)} appeared within 30 s')
        self.spin_until(lambda: False, 0.5)  # let both ends finish matching

        window = CpuWindow({s.name: self.graph.processes[s.name].pid for s in self.specs})
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault('stats', play.run()), daemon=True)
        thread.start()
        while thread.is_alive():
            self.executor.spin_once(timeout_sec=0.01)
        cpu, wall = window.stop()
        progress = {'count': len(received), 'at': time.monotonic()}

        def drained():
            if all(s in received for s in published):
                return True
            if len(received) != progress['count']:
                progress.update(count=len(received), at=time.monotonic())
            return time.monotonic() - progress['at'] > drain_s
        self.spin_until(drained, 30.0)
        t_diag = time.monotonic()
        self.spin_until(lambda: all(self.status_times.get(n, 0) > t_diag for n in self.full_names), 3.0)
        return TimedPlay(published, cpu, wall, result.get('stats'))

    def results(self, play: TimedPlay, startup_s: float) -> dict:
        """What every graph benchmark reports besides its headline numbers; after the graph has stopped (exit codes)."""
        nodes = diagnostics_detail(self.statuses)
        stats = play.stats
        return {'play': {'wall_s': rounded(play.wall_s, 2), 'messages': stats.counts if stats else {},
                         'interrupted': bool(stats and stats.interrupted)},
                'startup_s': rounded(startup_s, 1),
                'node_states_at_start': self.states,
                'nodes': nodes,
                'providers': {name: d['provider'] for name, d in nodes.items() if d['provider']},
                'node_exit_codes': self.graph.returncodes}

    def close(self) -> None:
        for player in self._players:
            node = player.node
            player.close()
            node.destroy_node()
        self._players = []
        self.executor.remove_node(self.node)
        self.node.destroy_node()


@contextmanager
def graph_bench(name: str, specs, *, log_dir: str | Path | None = None, start_timeout_s: float = 180.0):
    """Start `specs` as one process per node on a DDS domain of their own, wait until all are active, and yield a
    GraphBench named `name`; the graph is stopped on leaving."""
    from kp_pose_ros.graphs.processes import running_graph

    os.environ.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 90))  # before rclpy.init and the node processes
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    with running_graph(specs, log_dir=log_dir, timeout_s=start_timeout_s) as (context, executor, graph, states):
        bench = GraphBench(name, specs, context, executor, graph, states)
        try:
            yield bench
        finally:
            bench.close()
