"""Bag replay and recording without the ros2 CLI or rosbag2_py: rosbag2 bags (sqlite3 and MCAP) through `rosbags`.

Replay (`BagPlayer`, `kp-pose play`):
- Messages are read with the typestore of the bag's own message definitions (MCAP and rosbags-written bags carry
  them; a bag without any, e.g. a Humble sqlite3 bag, is read with the definitions installed beside rclpy).
- Each topic is published with its real rclpy message class. Where the bag's definition hashes (RIHS01) equal the
  installed ones the CDR bytes are published as they are (header stamps and payload byte-identical); otherwise the
  message is deserialised with the bag's definitions and copied field by field into the rclpy class.
- Timing: messages keep their recorded spacing, divided by `rate`.
- /tf_static is timeless, as tf2 treats it: every static transform in the bag is merged by child frame (what tf2's
  StaticTransformBroadcaster does) and published once, before the timed stream, transient-local reliable depth 1,
  so late subscribers get it. Its log time therefore never delays the stream (in a bag whose /tf_static was logged
  at t=0 and its images at 2020 wall time, the images start at once). Other topics recorded as transient-local are
  replayed latched too; everything else is reliable keep-last.
- Optional /clock (rosgraph_msgs/Clock) with the bag time, `--loop`, topic selection and topic remaps.

Recording (`BagRecorder`, `kp-pose record`): subscribes to the named topics as they appear (type discovered from
the graph), with a QoS adapted to their publishers, and writes the raw serialised messages (bytes and header stamps
untouched) with their receive time, to MCAP (default) or sqlite3, rosbag2 format version 8. The bag is closed
cleanly on Ctrl-C, SIGTERM or the end of the duration.
"""
from __future__ import annotations

import array
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Nodetype, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore

from kp_pose_ros.ros.qos import LATCHED_QOS, qos_profile
from kp_pose_ros.ros.topic_stats import message_class

TF_STATIC = '/tf_static'
CLOCK_TOPIC = '/clock'
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
BAG_VERSION = 8

def topic_name(name: str) -> str:
    return name if name.startswith('/') else '/' + name


def parse_remaps(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """'from:=to' strings (or a mapping) to {'/from': '/to'}."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {topic_name(k): topic_name(v) for k, v in items.items()}
    remaps = {}
    for item in items:
        src, sep, dst = item.partition(':=')
        if not sep or not src or not dst:
            raise ValueError(f"expected a remap as from:=to, got '{item}'")
        remaps[topic_name(src)] = topic_name(dst)
    return remaps


# --- message types ------------------------------------------------------------------------------------------

def rclpy_class(msgtype: str):
    """The rclpy class of 'pkg/msg/Name', or None when that interface package is not importable."""
    try:
        return message_class(msgtype)
    except (ImportError, AttributeError, ValueError):
        return None


def _nested_types(fields) -> list[str]:
    names = []
    for _, (kind, desc) in fields:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, desc = desc[0]
        if kind == Nodetype.NAME:
            names.append(desc)
    return names


class InstalledTypes:
    """A rosbags typestore of the message definitions installed beside rclpy (share/<pkg>/msg/*.msg, found through
    the ament index): what this machine's publishers put on the wire. Types are added on demand with their
    dependencies."""

    def __init__(self):
        self.store = get_typestore(Stores.EMPTY)

    @staticmethod
    def _definition(msgtype: str):
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        pkg, kind, name = msgtype.split('/')
        try:
            share = Path(get_package_share_directory(pkg))
        except (PackageNotFoundError, ValueError):
            return None
        msg, idl = share / kind / f'{name}.msg', share / kind / f'{name}.idl'
        if msg.is_file():
            return get_types_from_msg(msg.read_text(), msgtype)
        if idl.is_file():
            return get_types_from_idl(idl.read_text())
        return None

    def ensure(self, msgtype: str) -> bool:
        """Register `msgtype` and everything it uses; False when some definition is not installed."""
        todo, found = [msgtype], {}
        while todo:
            name = todo.pop()
            if name in self.store.fielddefs or name in found:
                continue
            try:
                typs = self._definition(name)
            except (TypesysError, OSError, ValueError):
                typs = None
            if not typs or name not in typs:
                return False
            found.update(typs)
            todo.extend(_nested_types(typs[name][1]))
        if found:
            self.store.register(found)
        return True

    def rihs01(self, msgtype: str) -> str | None:
        return self.store.hash_rihs01(msgtype) if self.ensure(msgtype) else None

    def msgdef(self, msgtype: str) -> tuple[str, str] | None:
        """(ros2msg definition text, RIHS01 hash) as a bag records them, or None when not installed."""
        if not self.ensure(msgtype):
            return None
        return self.store.generate_msgdef(msgtype, ros_version=2)[0], self.store.hash_rihs01(msgtype)


_MSGTYPE = re.compile(r'([A-Za-z][\w]*)/([A-Za-z][\w]*)')


def _assign(msg, name: str, value, current) -> None:
    if isinstance(value, np.ndarray):
        if isinstance(current, array.array):
            value = array.array(current.typecode, np.asarray(value, dtype=current.typecode).tobytes())
        elif isinstance(current, np.ndarray):
            value = np.asarray(value, dtype=current.dtype)
        elif isinstance(current, bytes):
            value = bytes(np.asarray(value, dtype=np.uint8))
        else:
            value = value.tolist()
    setattr(msg, name, value)


def to_rclpy(obj, cls):
    """A rosbags message object as an instance of the rclpy class `cls`, field by field (fields the bag's type lacks
    keep their defaults; fields only the bag has are dropped)."""
    msg = cls()
    for name, typestr in cls.get_fields_and_field_types().items():
        if not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        nested = _MSGTYPE.search(typestr)
        if nested:
            sub = rclpy_class(f'{nested.group(1)}/msg/{nested.group(2)}')
            if 'sequence<' in typestr or '[' in typestr:
                setattr(msg, name, [to_rclpy(v, sub) for v in value])
            else:
                setattr(msg, name, to_rclpy(value, sub))
        else:
            _assign(msg, name, value, getattr(msg, name))
    return msg


# --- replay ---------------------------------------------------------------------------------------------------

@dataclass
class PlayStats:
    bag: str
    counts: dict[str, int] = field(default_factory=dict)  # published topic -> messages published
    wall_s: float = 0.0
    loops: int = 0
    rate: float = 1.0
    interrupted: bool = False

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    def summary_line(self) -> str:
        topics = ', '.join(f'{t} {n}' for t, n in sorted(self.counts.items()))
        how = ' (interrupted)' if self.interrupted else ''
        return (f'kp-pose play: {self.messages} messages in {self.wall_s:.2f} s, {self.loops} loop(s) at rate '
                f'{self.rate:g}{how}: {topics}')


@dataclass
class _Output:
    topic: str
    publisher: object
    cls: type
    raw: bool  # publish the bag's CDR bytes as they are (the definitions match)


class BagPlayer:
    """Publishes one rosbag2 bag on `node`'s graph. Create, optionally `wait_for_subscribers`, `run`, `close`."""

    def __init__(self, node, bag: str | Path, *, rate: float = 1.0, loop: bool = False, clock_hz: float = 0.0,
                 remaps: Iterable[str] | Mapping[str, str] | None = None, topics: Sequence[str] | None = None,
                 depth: int = 10, convert: bool = False):
        if rate <= 0:
            raise ValueError(f'rate must be > 0, got {rate}')
        self.node, self.bag, self.rate, self.loop, self.clock_hz = node, Path(bag), rate, loop, clock_hz
        self.remaps = parse_remaps(remaps)
        self.log = node.get_logger()
        self.installed = InstalledTypes()
        # Bags without definitions (Humble sqlite3) are read with the installed ones.
        with Reader(self.bag) as probe:
            for msgtype in {c.msgtype for c in probe.connections}:
                self.installed.ensure(msgtype)
        self.reader = AnyReader([self.bag], default_typestore=self.installed.store)
        self.reader.open()
        self._made: list = []  # publishers created so far, destroyed again if set-up fails
        try:
            self._setup(set(map(topic_name, topics)) if topics else None, depth, convert)
        except BaseException:
            for publisher in self._made:
                self.node.destroy_publisher(publisher)
            self.reader.close()
            raise

    def _setup(self, selected: set[str] | None, depth: int, convert: bool) -> None:
        self.outputs: dict[int, _Output] = {}
        by_topic: dict[str, _Output] = {}
        self.static_connections, self.timed_connections = [], []
        for conn in self.reader.connections:
            if selected is not None and conn.topic not in selected:
                continue
            cls = rclpy_class(conn.msgtype)
            if cls is None:
                self.log.warning(f'{conn.topic}: message type {conn.msgtype} is not installed here; skipped')
                continue
            out_topic = self.remaps.get(conn.topic, conn.topic)
            static = conn.topic == TF_STATIC and conn.msgtype == 'tf2_msgs/msg/TFMessage'
            (self.static_connections if static else self.timed_connections).append(conn)
            bag_hash = self.reader.typestore.hash_rihs01(conn.msgtype)
            installed_hash = self.installed.rihs01(conn.msgtype)
            raw = not convert and (installed_hash is None or installed_hash == bag_hash)
            if not raw and not convert:
                self.log.info(f'{conn.topic}: the bag\'s {conn.msgtype} differs from the installed one; '
                              'converting field by field')
            if out_topic not in by_topic:
                offered = getattr(conn.ext, 'offered_qos_profiles', None) or []
                latched = static or any(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
                publisher = self.node.create_publisher(
                    cls, out_topic, LATCHED_QOS if latched else qos_profile('reliable', depth))
                self._made.append(publisher)
                by_topic[out_topic] = _Output(out_topic, publisher, cls, raw)
            elif by_topic[out_topic].cls is not cls:
                raise ValueError(f'{out_topic}: two message types ({by_topic[out_topic].cls.__name__} and '
                                 f'{cls.__name__}) would share one topic')
            self.outputs[conn.id] = _Output(out_topic, by_topic[out_topic].publisher, cls, raw)
        self.publishers = [o.publisher for o in by_topic.values()]
        self.clock_pub = None
        if self.clock_hz > 0:
            from rosgraph_msgs.msg import Clock
            self._clock_cls = Clock
            self.clock_pub = self.node.create_publisher(Clock, self.remaps.get(CLOCK_TOPIC, CLOCK_TOPIC),
                                                        qos_profile('reliable', 1))
            self._made.append(self.clock_pub)
        self.stats = PlayStats(str(self.bag), {o.topic: 0 for o in by_topic.values()}, rate=self.rate)

    @property
    def topics(self) -> list[str]:
        return sorted(self.stats.counts)

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait until every output topic has a subscriber (messages sent before discovery are lost)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if all(p.get_subscription_count() > 0 for p in self.publishers):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    # The loop of `run`.
    def _publish_clock(self, stamp_ns: int) -> None:
        if self.clock_pub is not None:
            msg = self._clock_cls()
            msg.clock.sec, msg.clock.nanosec = divmod(int(stamp_ns), 1_000_000_000)
            self.clock_pub.publish(msg)

    def _publish(self, conn, rawdata) -> None:
        out = self.outputs[conn.id]
        if out.raw:
            out.publisher.publish(bytes(rawdata))
        else:
            out.publisher.publish(to_rclpy(self.reader.deserialize(rawdata, conn.msgtype), out.cls))
        self.stats.counts[out.topic] += 1

    def publish_static(self) -> None:
        """All /tf_static transforms of the bag, merged by child frame (later ones win), as one latched message."""
        if not self.static_connections:
            return
        merged = {}
        for conn, _, rawdata in self.reader.messages(connections=self.static_connections):
            for transform in self.reader.deserialize(rawdata, conn.msgtype).transforms:
                merged[transform.child_frame_id] = transform
        out = self.outputs[self.static_connections[0].id]
        tf_stamped = rclpy_class('geometry_msgs/msg/TransformStamped')
        out.publisher.publish(out.cls(transforms=[to_rclpy(t, tf_stamped) for t in merged.values()]))
        self.stats.counts[out.topic] += 1

    def _play_once(self, should_stop) -> bool:
        if not self.timed_connections:  # /tf_static alone: reader.messages(connections=[]) would read every topic
            return True
        period = 1.0 / self.clock_hz if self.clock_hz > 0 else None
        t0 = w0 = next_clock = None
        for conn, stamp, rawdata in self.reader.messages(connections=self.timed_connections):
            if t0 is None:
                t0, w0 = stamp, time.monotonic()
                next_clock = w0
            target = w0 + (stamp - t0) / 1e9 / self.rate
            while True:
                now = time.monotonic()
                if should_stop():
                    return False
                if period is not None and now >= next_clock:
                    self._publish_clock(t0 + (now - w0) * self.rate * 1e9)
                    next_clock = max(next_clock + period, now)
                if now >= target:
                    break
                wake = min(target, next_clock) if period is not None else target
                time.sleep(min(max(wake - now, 0.0), 0.05))
            self._publish(conn, rawdata)
        return True

    def run(self, *, stop: threading.Event | None = None, duration: float | None = None,
            max_loops: int | None = None) -> PlayStats:
        """Play (once, or until stopped with loop=True); returns the statistics. Ctrl-C ends it cleanly."""
        start = time.monotonic()
        deadline = None if duration is None else start + duration
        context = self.node.context

        def should_stop():
            return ((stop is not None and stop.is_set()) or not context.ok()
                    or (deadline is not None and time.monotonic() >= deadline))
        try:
            self.publish_static()
            while True:
                self.stats.loops += 1
                if not self._play_once(should_stop):
                    self.stats.interrupted = not (deadline is not None and time.monotonic() >= deadline)
                    break
                if not self.loop or (max_loops is not None and self.stats.loops >= max_loops):
                    break
                if not self.timed_connections:
                    break
        except KeyboardInterrupt:
            self.stats.interrupted = True
        finally:
            self.stats.wall_s = time.monotonic() - start
        self.flush()
        return self.stats

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait (bounded) until reliable subscribers have acknowledged what was published."""
        deadline = time.monotonic() + timeout_s
        for pub in self.publishers:
            left = deadline - time.monotonic()
            if left <= 0 or not self.node.context.ok():
                break
            pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))

    def close(self) -> None:
        for pub in self.publishers + ([self.clock_pub] if self.clock_pub is not None else []):
            self.node.destroy_publisher(pub)
        self.publishers, self.clock_pub = [], None
        if self.reader.stack is not None:
            self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def play(node, bag: str | Path, *, wait_s: float = 0.0, duration: float | None = None, **options) -> PlayStats:
    """`kp-pose play`: replay `bag` from `node` (see BagPlayer for the options)."""
    with BagPlayer(node, bag, **options) as player:
        if wait_s > 0 and not player.wait_for_subscribers(wait_s):
            node.get_logger().warning(f'not every topic has a subscriber after {wait_s:g} s; playing anyway')
        return player.run(duration=duration)


# --- recording ------------------------------------------------------------------------------------------------

def _qos_time(duration) -> QosTime:
    ns = int(duration.nanoseconds)
    if ns >= 2**63 - 1 or ns < 0:  # infinite
        return QosTime(0x7FFFFFFF, 0xFFFFFFFF)
    return QosTime(*divmod(ns, 1_000_000_000))


def bag_qos(profile: QoSProfile) -> Qos:
    """An rclpy QoS profile as a rosbags one (the enum values are rmw's in both)."""
    return Qos(history=QosHistory(int(profile.history)), depth=int(profile.depth),
               reliability=QosReliability(int(profile.reliability)),
               durability=QosDurability(int(profile.durability)), deadline=_qos_time(profile.deadline),
               lifespan=_qos_time(profile.lifespan), liveliness=QosLiveliness(int(profile.liveliness)),
               liveliness_lease_duration=_qos_time(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions))


@dataclass
class RecordStats:
    path: str
    storage: str
    counts: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def summary_line(self) -> str:
        topics = ', '.join(f'{t} {n}' for t, n in sorted(self.counts.items())) or 'no topic seen'
        missing = f"; never seen: {', '.join(self.missing)}" if self.missing else ''
        return (f'kp-pose record: {sum(self.counts.values())} messages in {self.wall_s:.2f} s to {self.path} '
                f'({self.storage}): {topics}{missing}')


class BagRecorder:
    """Records `topics` from `node`'s graph into a new rosbag2 bag at `out` while the node is spun. Topics are
    subscribed as soon as they appear; messages are written as received (raw CDR) with their receive time."""

    def __init__(self, node, out: str | Path, topics: Sequence[str], *, storage: str = 'mcap', depth: int = 50,
                 discovery_period_s: float = 0.2):
        if storage not in STORAGES:
            raise ValueError(f"unknown storage '{storage}', expected one of: {', '.join(STORAGES)}")
        if not topics:
            raise ValueError('nothing to record: give at least one topic')
        self.node, self.path, self.storage, self.depth = node, Path(out), storage, depth
        self.pending = list(dict.fromkeys(map(topic_name, topics)))
        self.installed = InstalledTypes()
        self.connections, self.subscriptions = {}, []
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self.writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self.writer.open()
        self._timer = None
        try:
            self._timer = node.create_timer(discovery_period_s, self._discover)
            self._discover()
        except BaseException:
            self.close()  # a bag with its metadata, and nothing left subscribed
            raise

    def _subscription_qos(self, topic: str) -> tuple[QoSProfile, list[Qos]]:
        infos = self.node.get_publishers_info_by_topic(topic)
        profiles = [i.qos_profile for i in infos]
        latched = bool(profiles) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
        best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in profiles)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth,
                         reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        return qos, [bag_qos(p) for p in profiles]

    def _discover(self) -> None:
        if not self.pending or self.writer is None:
            return
        types = dict(self.node.get_topic_names_and_types())
        for topic in list(self.pending):
            if topic not in types:
                continue
            msgtype = types[topic][0]
            if len(types[topic]) > 1:
                self.node.get_logger().warning(f'{topic} has several types {types[topic]}; recording {msgtype}')
            cls = rclpy_class(msgtype)
            definition = self.installed.msgdef(msgtype)
            if cls is None or definition is None:
                self.node.get_logger().error(f'{topic}: type {msgtype} is not installed here; not recorded')
                self.pending.remove(topic)
                continue
            qos, offered = self._subscription_qos(topic)
            conn = self.writer.add_connection(topic, msgtype, msgdef=definition[0], rihs01=definition[1],
                                              offered_qos_profiles=offered)
            self.connections[topic] = conn
            self.counts[topic] = 0
            self.subscriptions.append(self.node.create_subscription(
                cls, topic, lambda data, c=conn: self._on_message(c, data), qos, raw=True))
            self.pending.remove(topic)
            self.node.get_logger().info(f'recording {topic} [{msgtype}]')

    def _on_message(self, conn, data: bytes) -> None:
        with self._lock:
            if self.writer is None:
                return
            self.writer.write(conn, self.node.get_clock().now().nanoseconds, data)
            self.counts[conn.topic] += 1

    def close(self) -> RecordStats:
        """Write the bag's index and metadata, then stop subscribing; safe to call twice, and after a SIGTERM has
        already shut the context down."""
        with self._lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        try:
            if self._timer is not None:
                self.node.destroy_timer(self._timer)
            for sub in self.subscriptions:
                self.node.destroy_subscription(sub)
        except Exception:  # noqa: BLE001 - the context may be gone; the bag is already complete
            pass
        self._timer, self.subscriptions = None, []
        return RecordStats(str(self.path), self.storage, dict(self.counts), list(self.pending),
                           time.monotonic() - self._start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def record(node, executor, out: str | Path, topics: Sequence[str], *, storage: str = 'mcap',
           duration: float | None = None, stop: threading.Event | None = None) -> RecordStats:
    """`kp-pose record`: spin `executor` (which holds `node`) recording `topics` until `duration`, `stop`, Ctrl-C or
    SIGTERM; the bag is always closed."""
    recorder = BagRecorder(node, out, topics, storage=storage)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while node.context.ok() and not (stop is not None and stop.is_set()) and (
                deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C or SIGTERM: rclpy shut the context down
        pass
    finally:
        stats = recorder.close()
    return stats
