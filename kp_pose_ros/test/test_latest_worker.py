"""The background worker of the heavy nodes: runs items in order of arrival, but only the newest one waiting."""
import threading
import time

from kp_pose_ros.core.latest_worker import LatestWorker


def _wait(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def test_newest_item_replaces_the_waiting_one_while_busy():
    started, release, done = threading.Event(), threading.Event(), []

    def work(item):
        if item == 0:
            started.set()
            release.wait(5.0)
        done.append(item)

    worker = LatestWorker(work)
    try:
        assert worker.submit(0) is False
        assert started.wait(5.0)  # 0 running
        assert worker.submit(1) is False  # 1 waiting
        assert worker.submit(2) is True and worker.submit(3) is True  # each replaced the one waiting
        release.set()
        assert _wait(worker.idle)
        assert done == [0, 3]
    finally:
        worker.stop()


def test_stop_finishes_the_running_item_and_drops_the_waiting_one():
    started, release, done = threading.Event(), threading.Event(), []

    def work(item):
        started.set()
        release.wait(5.0)
        done.append(item)

    worker = LatestWorker(work)
    worker.submit('running')
    assert started.wait(5.0)
    worker.submit('waiting')
    threading.Timer(0.1, release.set).start()
    worker.stop()
    assert done == ['running'] and not worker._thread.is_alive()
    assert worker.submit('late') is False and done == ['running']  # nothing runs after stop
