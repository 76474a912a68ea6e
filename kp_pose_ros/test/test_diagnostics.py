"""Diagnostics: bounded sliding windows, the level rules on a real node, and /diagnostics seen from another process."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import spin_until

from kp_pose_ros.core.stats import LatencyWindow, RateWindow

S = 1_000_000_000


# -- core/stats ---------------------------------------------------------------------------------------------------
def test_rate_window_measures_a_regular_stream_and_decays_when_it_stops():
    w = RateWindow(window_s=5.0, maxlen=1000)
    assert w.last_ns is None and w.count == 0 and w.rate_hz(0) == 0.0
    w.tick(0)
    assert w.rate_hz(0) == 0.0  # fewer than 2 events
    t = 0
    for _ in range(1, 100):  # 10 Hz for ~10 s
        t += S // 10
        w.tick(t)
    assert w.count == 100 and w.last_ns == t
    assert w.rate_hz(t) == pytest.approx(10.0, rel=0.01)
    assert w.recent(t) == 50
    assert w.age_s(t + S // 2) == pytest.approx(0.5)
    assert w.rate_hz(t + 3 * S) < 10.0  # decays once the stream stops
    assert w.rate_hz(t + 6 * S) == 0.0 and w.recent(t + 6 * S) == 0
    assert w.count == 100  # the total is kept


def test_rate_window_memory_is_bounded_and_fast_rates_still_right():
    w = RateWindow(window_s=5.0, maxlen=100)
    for i in range(10_000):  # 1 kHz, far more events than maxlen in the window
        w.tick(i * S // 1000)
    assert w.recent(9_999 * S // 1000) == 100
    assert w.rate_hz(9_999 * S // 1000) == pytest.approx(1000.0, rel=0.01)
    assert w.count == 10_000


def test_latency_window_median_p95_and_bounded_memory():
    w = LatencyWindow(maxlen=200)
    assert len(w) == 0 and np.isnan(w.median()) and np.isnan(w.p95())
    for ms in range(1, 101):
        w.add(ms)
    assert w.median() == pytest.approx(50.5)
    assert w.p95() == pytest.approx(95.05)  # linear interpolation, as numpy.percentile
    for i in range(10_000):
        w.add(i)
    assert len(w) == 200
    assert w.median() == pytest.approx(np.median(np.arange(9_800, 10_000)))
    assert w.p95() == pytest.approx(np.percentile(np.arange(9_800, 10_000), 95))


# -- NodeDiagnostics on a real node -------------------------------------------------------------------------------
def _values(status):
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture
def diag(ros_node):
    from kp_pose_ros.ros.diagnostics import NodeDiagnostics

    node, _ = ros_node
    d = NodeDiagnostics(node, period_s=0.2, stale_input_s=0.3)
    yield d
    d.destroy()


def test_fresh_input_is_ok_with_rates_latencies_and_info(diag):
    from kp_pose_ros.ros.diagnostics import OK, level_of

    diag.set_state('active')
    diag.set_info('model', 'robot_kp.onnx')
    diag.set_info('provider', 'CPUExecutionProvider')
    for _ in range(5):
        diag.input('image')
        with diag.timed('inference'):
            time.sleep(0.002)
        diag.output('keypoints')
        time.sleep(0.01)
    status = diag.status()
    v = _values(status)
    assert level_of(status.level) == OK and status.message == 'OK', status.message
    assert status.name == '/kp_pose_test' and status.hardware_id == ''
    assert v['state'] == 'active' and v['model'] == 'robot_kp.onnx' and v['provider'] == 'CPUExecutionProvider'
    assert float(v['in.image.rate_hz']) > 10 and float(v['in.image.age_s']) < 0.3
    assert float(v['out.keypoints.rate_hz']) > 10
    assert v['latency.inference.samples'] == '5' and 1.5 < float(v['latency.inference.median_ms']) < 100
    assert float(v['latency.inference.p95_ms']) >= float(v['latency.inference.median_ms'])
    assert v['dropped.rate_hz'] == '0.00'


def test_stale_input_warns_only_while_active(diag):
    from kp_pose_ros.ros.diagnostics import OK, WARN, level_of

    diag.set_state('active')
    diag.input('depth')
    time.sleep(0.4)  # > stale_input_s
    status = diag.status()
    assert level_of(status.level) == WARN and 'no depth for' in status.message
    diag.set_state('inactive')
    assert level_of(diag.status().level) == OK
    diag.set_state('active')
    diag.input('depth')
    assert level_of(diag.status().level) == OK


def test_errors_warn_then_error_when_they_keep_coming(diag):
    from kp_pose_ros.ros.diagnostics import ERROR, ERROR_BURST, WARN, level_of

    diag.set_state('active')
    diag.error('on_image', 'ValueError: bad shape')
    status = diag.status()
    v = _values(status)
    assert level_of(status.level) == WARN and 'on_image: ValueError: bad shape' in status.message
    assert v['errors.on_image'] == '1' and v['errors.last'] == 'on_image: ValueError: bad shape'
    for _ in range(ERROR_BURST):
        diag.error('on_image', 'again')
    status = diag.status()
    assert level_of(status.level) == ERROR and _values(status)['errors.on_image'] == str(ERROR_BURST + 1)


def test_drops_above_a_fifth_of_inputs_warn(diag):
    from kp_pose_ros.ros.diagnostics import OK, WARN, level_of

    diag.set_state('active')
    for i in range(20):
        diag.input('image')
        if i % 10 == 0:
            diag.drop('sync')
        time.sleep(0.005)
    status = diag.status()
    assert level_of(status.level) == OK, status.message  # 2 in 20
    for _ in range(6):
        diag.drop('stale')
        time.sleep(0.005)
    status = diag.status()
    v = _values(status)
    assert level_of(status.level) == WARN and 'dropping' in status.message, status.message
    assert v['dropped.sync'] == '2' and v['dropped.stale'] == '6' and float(v['dropped.rate_hz']) > 0


def test_error_state_and_checks(diag):
    from diagnostic_msgs.msg import DiagnosticStatus

    from kp_pose_ros.ros.diagnostics import ERROR, OK, WARN, level_of

    diag.set_state('unconfigured', ERROR, 'configure failed: model not found')
    status = diag.status()
    assert level_of(status.level) == ERROR and 'configure failed: model not found' in status.message
    assert _values(status)['state'] == 'unconfigured'

    diag.set_state('active')
    diag.add_check(lambda: [(OK, '', {'calibration.spread_cm': '0.4'})])
    assert level_of(diag.status().level) == OK
    diag.add_check(lambda: [(DiagnosticStatus.WARN, 'last good estimate 3.2 s ago', {'estimate.age_s': '3.2'})])
    status = diag.status()
    v = _values(status)
    assert level_of(status.level) == WARN and status.message == 'last good estimate 3.2 s ago'
    assert v['calibration.spread_cm'] == '0.4' and v['estimate.age_s'] == '3.2'

    def broken_check():
        raise RuntimeError('boom')

    diag.add_check(broken_check)
    status = diag.status()  # never raises
    assert level_of(status.level) == ERROR
    assert status.message.startswith('check ') and 'broken_check failed: RuntimeError: boom' in status.message


def test_timer_publishes_on_diagnostics_and_destroy_stops_it(ros_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.lifecycle import LifecycleNode

    from kp_pose_ros.ros.diagnostics import DIAGNOSTICS_QOS, DIAGNOSTICS_TOPIC, NodeDiagnostics

    node, executor = ros_node
    # An unconfigured lifecycle node still reports.
    lc = LifecycleNode('lc_diag', namespace='robot_calib', context=node.context)
    executor.add_node(lc)
    try:
        d = NodeDiagnostics(lc, period_s=0.1)
        d.set_state('unconfigured')
        got = []
        node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, got.append, DIAGNOSTICS_QOS)
        mine = lambda: [a for a in got if a.status and a.status[0].name == '/robot_calib/lc_diag']  # noqa: E731
        assert spin_until(executor, lambda: len(mine()) >= 2, 10.0)
        array = mine()[-1]
        assert array.header.stamp.sec > 0 and _values(array.status[0])['state'] == 'unconfigured'
        d.destroy()
        d.destroy()  # twice is fine
        d.publish()  # a no-op after destroy
        n = len(mine())
        spin_until(executor, lambda: False, 0.4)
        assert len(mine()) == n
    finally:
        executor.remove_node(lc)
        lc.destroy_node()


# -- another process ----------------------------------------------------------------------------------------------
PUBLISHER = textwrap.dedent('''
    import sys, time
    import rclpy
    from rclpy.lifecycle import LifecycleNode
    from kp_pose_ros.ros.diagnostics import NodeDiagnostics, WARN

    rclpy.init()
    node = LifecycleNode('robot_keypoints', namespace='robot_calib')
    diag = NodeDiagnostics(node, period_s=1.0)
    diag.set_info('provider', 'CPUExecutionProvider')
    diag.set_state('active')
    diag.add_check(lambda: [(WARN, 'calibration spread 2.1 cm', {'calibration.spread_cm': '2.1'})])

    def frame():
        diag.input('image')
        with diag.timed('inference'):
            time.sleep(0.001)
        diag.output('keypoints')

    node.create_timer(0.05, frame)
    deadline = time.monotonic() + 30
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        diag.destroy()
        node.destroy_node()
        rclpy.try_shutdown()
''')


def test_another_process_receives_diagnostics_at_about_1_hz(ros_node):
    from diagnostic_msgs.msg import DiagnosticArray

    from kp_pose_ros.ros.diagnostics import DIAGNOSTICS_TOPIC, WARN, level_of

    node, executor = ros_node
    got = []  # (receive time, array) of the other process's node

    def on_array(array):
        if any(s.name == '/robot_calib/robot_keypoints' for s in array.status):
            got.append((time.monotonic(), array))

    node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_array, 10)
    proc = subprocess.Popen([sys.executable, '-c', PUBLISHER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=os.environ)
    try:
        assert spin_until(executor, lambda: len(got) >= 4, 20.0), f'{len(got)} arrays arrived'
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    gaps = np.diff([t for t, _ in got])
    assert 0.7 < float(np.median(gaps)) < 1.3, gaps
    status = got[-1][1].status[0]
    v = _values(status)
    assert level_of(status.level) == WARN and status.message == 'calibration spread 2.1 cm'
    assert v['state'] == 'active' and v['provider'] == 'CPUExecutionProvider' and v['calibration.spread_cm'] == '2.1'
    assert 15 < float(v['in.image.rate_hz']) < 25 and 15 < float(v['out.keypoints.rate_hz']) < 25
    assert float(v['in.image.age_s']) < 1.0
    assert int(v['latency.inference.samples']) > 10 and float(v['latency.inference.median_ms']) >= 1.0
    assert proc.returncode in (0, -signal.SIGINT), out.decode(errors='replace')[-2000:]
