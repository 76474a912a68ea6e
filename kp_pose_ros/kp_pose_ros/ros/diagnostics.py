"""Per-node diagnostics on ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), about once a second.

Each node owns one `NodeDiagnostics`. Its callbacks report what happens (``input``, ``output``, ``latency`` /
``timed``, ``drop``, ``error``); the node sets static facts (``set_info``: model, execution provider), its lifecycle
state (``set_state``) and its own health checks (``add_check``). A timer publishes one DiagnosticStatus per node every
``period_s``, in every lifecycle state, from a plain (non-lifecycle) publisher, so an inactive or unconfigured node
still says why it produces nothing. Rates and ages use the monotonic clock; the array's header stamp is the node's
clock.

Status: name = the node's fully qualified name (``/robot_calib/robot_keypoints``), hardware_id = '', message = the
problems, worst first ('OK' when there are none), values (KeyValue):

    state                         lifecycle state: unconfigured | inactive | active | finalized (unknown if never set)
    in.<topic>.rate_hz, .age_s    arrival rate over the last 5 s, seconds since the last message
    out.<topic>.rate_hz           publish rate over the last 5 s
    latency.<stage>.median_ms, .p95_ms, .samples    over the last 200 samples of the stage
    dropped.<reason>              inputs dropped since start, by reason (stale, bad_encoding, no_camera_info, sync, ...)
    dropped.rate_hz               drops per second over the last 5 s
    errors.<callback>, errors.last    exceptions caught at the node boundary since start, and the last one
    <info key>                    set_info values (model, provider, ...)
    <check key>                   values returned by the node's own checks

Levels (the status level is the highest of these):

    OK     by default
    WARN   an input seen before has not arrived for more than ``stale_input_s`` (5 s) while the node is active
           (or has no lifecycle state);
           an error was caught in the last 10 s (ERROR_WINDOW_S);
           drops exceed 20 % (DROP_WARN_RATIO) of the busiest input's rate over the last 5 s
    ERROR  10 or more errors (ERROR_BURST) in the last 10 s;
           the state carries ERROR (e.g. ``set_state('unconfigured', ERROR, 'configure failed: ...')``);
           a check raised (reported as 'check <name> failed: ...')
    any    what a check returns: (level, message) or (level, message, {key: value})

Levels are plain ints here (OK=0, WARN=1, ERROR=2, STALE=3); `level_of` reads a message's level whether the
distribution types the field as bytes (Humble, Jazzy: b'\\x00') or int.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterable, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from kp_pose_ros.core.stats import LatencyWindow, RateWindow

DIAGNOSTICS_TOPIC = '/diagnostics'
# What diagnostic_updater and the aggregator use: reliable, volatile, keep last (depth 10 for bursts).
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR', STALE: 'STALE'}

RATE_WINDOW_S = 5.0      # rates and the drop ratio are measured over this window
LATENCY_SAMPLES = 200    # latency median/p95 over the last this many samples per stage
ERROR_WINDOW_S = 10.0    # an error within this long -> WARN
ERROR_BURST = 10         # this many errors within ERROR_WINDOW_S -> ERROR
DROP_WARN_RATIO = 0.2    # drop rate above this fraction of the busiest input's rate -> WARN

_LEVEL_IS_BYTES = isinstance(DiagnosticStatus.OK, (bytes, bytearray))


def level_of(value) -> int:
    """A DiagnosticStatus level (bytes b'\\x01' or int 1) or a check's level -> int."""
    if isinstance(value, (bytes, bytearray)):
        return value[0] if value else OK
    return int(value)


def level_field(level: int):
    """An int level in the type this distribution's DiagnosticStatus.level takes."""
    return bytes([level]) if _LEVEL_IS_BYTES else level


def _fmt(x: float) -> str:
    return f'{x:.2f}'


def _check_name(fn) -> str:
    return getattr(fn, '__qualname__', None) or getattr(fn, '__name__', None) or type(fn).__name__


class NodeDiagnostics:
    """Collects one node's rates, latencies, drops, errors, state and checks; publishes them every ``period_s``."""

    def __init__(self, node, period_s: float = 1.0, stale_input_s: float = 5.0):
        self.node = node
        self.period_s = float(period_s)
        self.stale_input_s = float(stale_input_s)
        self._lock = threading.Lock()
        self._inputs: dict = {}
        self._outputs: dict = {}
        self._latency: dict = {}
        self._drops: Counter = Counter()
        self._drop_rate = RateWindow(RATE_WINDOW_S)
        self._errors: Counter = Counter()
        self._error_times = RateWindow(ERROR_WINDOW_S, maxlen=max(ERROR_BURST, 2) * 4)
        self._last_error = ''
        self._info: dict = {}
        self._state = ''
        self._state_level = OK
        self._state_message = ''
        self._checks: list = []
        self._publisher = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        # Its own callback group: under a multi-threaded executor the report is not held up by a slow inference.
        self._timer = node.create_timer(self.period_s, self._on_timer,
                                        callback_group=MutuallyExclusiveCallbackGroup())
        self._timer_failed = False

    # -- what the node reports --------------------------------------------------------------------------------
    def input(self, name: str) -> None:
        """An input message arrived on ``name``."""
        now = time.monotonic_ns()
        with self._lock:
            self._window(self._inputs, name).tick(now)

    def output(self, name: str) -> None:
        """An output was published on ``name``."""
        now = time.monotonic_ns()
        with self._lock:
            self._window(self._outputs, name).tick(now)

    def latency(self, stage: str, ms: float) -> None:
        with self._lock:
            window = self._latency.get(stage)
            if window is None:
                window = self._latency[stage] = LatencyWindow(LATENCY_SAMPLES)
            window.add(ms)

    @contextmanager
    def timed(self, stage: str):
        """``with diag.timed('inference'): ...`` records the block's wall time in ms (not when it raises)."""
        t0 = time.perf_counter()
        yield
        self.latency(stage, (time.perf_counter() - t0) * 1e3)

    def drop(self, reason: str) -> None:
        """One input dropped (stale, bad_encoding, no_camera_info, sync, ...)."""
        now = time.monotonic_ns()
        with self._lock:
            self._drops[reason] += 1
            self._drop_rate.tick(now)

    def error(self, what: str, message: str = '') -> None:
        """An exception caught at the node boundary in callback ``what``."""
        now = time.monotonic_ns()
        with self._lock:
            self._errors[what] += 1
            self._error_times.tick(now)
            self._last_error = (f'{what}: {message}' if message else what)[:300]

    def set_info(self, key: str, value) -> None:
        """A static fact shown as a KeyValue (model, provider, ...)."""
        with self._lock:
            self._info[str(key)] = str(value)

    def set_state(self, state: str, level: Optional[int] = None, message: str = '') -> None:
        """The lifecycle state; ``level``/``message`` say what is wrong with it (configure failed: ...)."""
        with self._lock:
            self._state = str(state)
            self._state_level = OK if level is None else level_of(level)
            self._state_message = message

    def add_check(self, fn: Callable[[], Iterable]) -> None:
        """``fn()`` -> iterable of (level, message) or (level, message, {key: value}), called at each report."""
        with self._lock:
            self._checks.append(fn)

    # -- the report -------------------------------------------------------------------------------------------
    def status(self) -> DiagnosticStatus:
        now = time.monotonic_ns()
        problems = []  # (level, message)
        values = []
        with self._lock:
            state = self._state or 'unknown'
            checks = list(self._checks)
            values.append(('state', state))
            if self._state_level > OK or self._state_message:
                problems.append((self._state_level, self._state_message or f'state {state}'))
            watch_inputs = state not in ('unconfigured', 'inactive', 'finalized')
            busiest = 0.0
            for name, window in self._inputs.items():
                rate, age = window.rate_hz(now), window.age_s(now)
                busiest = max(busiest, rate)
                values += [(f'in.{name}.rate_hz', _fmt(rate)), (f'in.{name}.age_s', _fmt(age))]
                if watch_inputs and age > self.stale_input_s:
                    problems.append((WARN, f'no {name} for {age:.1f} s'))
            for name, window in self._outputs.items():
                values.append((f'out.{name}.rate_hz', _fmt(window.rate_hz(now))))
            for stage, window in self._latency.items():
                values += [(f'latency.{stage}.median_ms', _fmt(window.median())),
                           (f'latency.{stage}.p95_ms', _fmt(window.p95())),
                           (f'latency.{stage}.samples', str(len(window)))]
            drop_rate = self._drop_rate.rate_hz(now)
            values += [(f'dropped.{reason}', str(n)) for reason, n in sorted(self._drops.items())]
            values.append(('dropped.rate_hz', _fmt(drop_rate)))
            if drop_rate > DROP_WARN_RATIO * busiest:
                share = f'{100 * drop_rate / busiest:.0f} % of inputs' if busiest > 0 else 'no inputs'
                problems.append((WARN, f'dropping {drop_rate:.1f} Hz ({share})'))
            values += [(f'errors.{what}', str(n)) for what, n in sorted(self._errors.items())]
            if self._errors:
                values.append(('errors.last', self._last_error))
            recent_errors = self._error_times.recent(now)
            if recent_errors:
                level = ERROR if recent_errors >= ERROR_BURST else WARN
                problems.append((level, f'{recent_errors} errors in {ERROR_WINDOW_S:g} s, last {self._last_error}'))
            values += list(self._info.items())
        for fn in checks:  # outside the lock: a check may take the node's own locks
            try:
                for item in fn() or ():
                    level, message = level_of(item[0]), str(item[1])
                    if len(item) > 2 and item[2]:
                        values += [(str(k), str(v)) for k, v in item[2].items()]
                    if level > OK:
                        problems.append((level, message))
            except Exception as exc:  # a check never breaks the report
                problems.append((ERROR, f'check {_check_name(fn)} failed: {type(exc).__name__}: {exc}'))
        problems.sort(key=lambda p: -p[0])
        msg = DiagnosticStatus()
        msg.level = level_field(problems[0][0] if problems else OK)
        msg.name = self.node.get_fully_qualified_name()
        msg.hardware_id = ''
        msg.message = '; '.join(m for _, m in problems if m) if problems else 'OK'
        msg.values = [KeyValue(key=k, value=v) for k, v in values]
        return msg

    def publish(self) -> None:
        """Sends the status now (the timer calls this every period_s)."""
        if self._publisher is None:
            return
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        array.status = [self.status()]
        self._publisher.publish(array)

    def _on_timer(self) -> None:
        try:
            self.publish()
            self._timer_failed = False
        except Exception as exc:  # never end the executor; say it once per failure streak
            if not self._timer_failed:
                self.node.get_logger().error(f'diagnostics: publishing failed: {type(exc).__name__}: {exc}')
            self._timer_failed = True

    def destroy(self) -> None:
        """Stops the timer and removes the publisher (safe to call twice)."""
        timer, publisher = self._timer, self._publisher
        self._timer = self._publisher = None
        if timer is not None:
            self.node.destroy_timer(timer)
        if publisher is not None:
            self.node.destroy_publisher(publisher)

    @staticmethod
    def _window(table: dict, name: str) -> RateWindow:
        window = table.get(name)
        if window is None:
            window = table[name] = RateWindow(RATE_WINDOW_S)
        return window
