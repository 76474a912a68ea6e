"""Heavy per-frame work on one background thread, always on the newest input.

ROS executors take one message per subscription per wait cycle. A node whose frame callback takes longer than a
frame period therefore falls behind on its cheap inputs too (joint states, depth images): their queues fill with
old messages, and pairing a frame with the joint state or depth image of its own stamp fails. Running the heavy
step here keeps every subscription callback short; while the worker is busy, a newer submission replaces the one
waiting (real-time: the newest frame wins)."""
from __future__ import annotations

import threading
from typing import Any, Callable


class _TurnLock:
    """A lock granted in the order it was asked for (threading.Lock is not fair: a worker that releases it and asks
    again at once can keep it from the others)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._cond:
            turn, self._next = self._next, self._next + 1
            while turn != self._serving:
                self._cond.wait()

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


# Heavy steps of one process run one at a time, in turn. Nodes composed into one process (kp-pose run, tests,
# kp-pose demo --in-process) would otherwise run rendering, detection, sampling and fitting side by side, and
# threads running numpy-heavy Python together convoy on the GIL (measured in the demo: the fit went from ~0.1 s
# to ~0.8 s). Under launch each node is its own process, with its own lock.
_PROCESS_TURNS = _TurnLock()


class LatestWorker:
    def __init__(self, fn: Callable[[Any], None], name: str = 'latest-worker') -> None:
        self._fn = fn
        self._cond = threading.Condition()
        self._pending: tuple[Any] | None = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue `item` for the worker; True when it replaced an item still waiting (that one is dropped)."""
        with self._cond:
            if self._stopping:  # deactivating: nothing is queued, nothing was replaced
                return False
            replaced = self._pending is not None
            self._pending = (item,)
            self._cond.notify()
        return replaced

    def idle(self) -> bool:
        """Nothing waiting and nothing running."""
        with self._cond:
            return self._pending is None and not self._busy

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the item in progress, drop any waiting one, end the thread."""
        with self._cond:
            self._stopping = True
            self._pending = None
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                (item,), self._pending = self._pending, None
                self._busy = True
            try:
                with _PROCESS_TURNS:
                    self._fn(item)  # the caller passes a function that handles its own exceptions
            finally:
                with self._cond:
                    self._busy = False
