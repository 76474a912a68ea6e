"""The base of every node of the suite: an rclpy lifecycle node, as users of Isaac ROS and nav2 expect.

- Parameters are declared in `__init__` from the node's `PARAMS` table (ros/params.py): structural ones are refused
  while the node is configured, live ones change through a validating callback and reach `on_parameter_change`.
- `configure()` (subclass) reads them, loads and warms up models; a ConfigureError (missing or corrupt model, bad
  value) makes the transition FAIL with the reason logged and shown in /diagnostics, and leaves the node alive and
  unconfigured so it can be fixed and configured again. `cleanup()` frees what configure made.
- `activate()` creates subscriptions, timers and services; `deactivate()` undoes it.
- Every entity created inside configure() or activate() is recorded and destroyed by cleanup or deactivate, so
  subclasses never track them; every subscription, timer, service and worker callback is wrapped at the node
  boundary: an exception is logged with its location (throttled), counted in /diagnostics, and never reaches the
  executor. A live parameter whose `on_parameter_change` raises is refused with the exception as the reason.
- Arrivals on the topics named in `STREAMS` count as inputs in /diagnostics (rates, staleness).
- `create_worker()` moves a heavy per-frame step off the executor (core/latest_worker.py), so cheap inputs such as
  joint states and depth images are taken as they arrive.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from kp_pose_ros.core.latest_worker import LatestWorker
from kp_pose_ros.ros.diagnostics import ERROR, NodeDiagnostics
from kp_pose_ros.ros.params import Param, ParamGuard, declare_params


class ConfigureError(RuntimeError):
    """The node cannot be configured as its parameters say (e.g. a missing model); the message says what to fix."""


def _where(exc: BaseException) -> str:
    """'file.py:123 in function' of the innermost frame of an exception's traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ''
    last = frames[-1]
    return f' at {last.filename.rsplit("/", 1)[-1]}:{last.lineno} in {last.name}'


class PipelineNode(LifecycleNode):
    PARAMS: tuple[Param, ...] = ()
    # Relative topic names whose messages are the node's data inputs (counted and checked for staleness).
    STREAMS: tuple[str, ...] = ()

    def __init__(self, node_name: str, **kwargs) -> None:
        self._phase: list | None = None  # entities created now belong to this list (None: the node's lifetime)
        self._boundary = False  # wrap callbacks from here on (not rclpy's own parameter services)
        super().__init__(node_name, **kwargs)
        self._configured_entities: list = []
        self._active_entities: list = []
        self.state = 'unconfigured'
        self.p = declare_params(self, self.PARAMS)
        self._param_guard = ParamGuard(self, self.PARAMS, self.p, lambda: self.state in ('inactive', 'active'),
                                       self._parameter_changed)
        self._boundary = True
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set_state('unconfigured')

    # -- what a node implements ---------------------------------------------------------------------------------------
    def configure(self) -> None:
        """Read structural parameters, load models, create publishers. Raise ConfigureError to refuse."""

    def activate(self) -> None:
        """Create subscriptions, timers and services."""

    def deactivate(self) -> None:
        """Extra work when processing stops (entities made in activate() are destroyed by the base)."""

    def cleanup(self) -> None:
        """Free models and state made by configure() (entities made in configure() are destroyed by the base)."""

    def on_parameter_change(self, name: str, value: Any) -> None:
        """A live parameter changed (already validated, already in self.p); rebuild what depends on it."""

    # -- lifecycle transitions ---------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._param_guard.reread(self)
        failure = self._run_phase(self.configure, self._configured_entities)
        if failure:
            self._release(self._configured_entities, self.cleanup)
            self.get_logger().error(f'configure failed: {failure}. The node stays unconfigured; fix it and call '
                                    f'configure again (ros2 lifecycle set {self.get_fully_qualified_name()} '
                                    'configure).')
            self.diagnostics.set_state('unconfigured', ERROR, f'configure failed: {failure}')
            return TransitionCallbackReturn.FAILURE
        return self._entered('inactive')

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        failure = self._run_phase(self.activate, self._active_entities)
        if failure:
            self._release(self._active_entities, self.deactivate)
            self.get_logger().error(f'activate failed: {failure}')
            self.diagnostics.set_state('inactive', ERROR, f'activate failed: {failure}')
            return TransitionCallbackReturn.FAILURE
        super().on_activate(state)
        return self._entered('active')

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(self._active_entities, self.deactivate)
        super().on_deactivate(state)
        return self._entered('inactive')

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(self._configured_entities, self.cleanup)
        return self._entered('unconfigured')

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(self._active_entities, self.deactivate)
        self._release(self._configured_entities, self.cleanup)
        return self._entered('finalized')

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(self._active_entities, self.deactivate)
        self._release(self._configured_entities, self.cleanup)
        self.diagnostics.set_state('unconfigured', ERROR, 'a transition raised; back to unconfigured')
        self.state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        if self.state != 'finalized':
            self._release(self._active_entities, self.deactivate)
            self._release(self._configured_entities, self.cleanup)
            self.state = 'finalized'
        self.diagnostics.destroy()
        return super().destroy_node()

    def _entered(self, state: str) -> TransitionCallbackReturn:
        self.state = state
        self.diagnostics.set_state(state)
        self.get_logger().info(f'{state}')
        return TransitionCallbackReturn.SUCCESS

    def _run_phase(self, hook: Callable[[], None], entities: list) -> str:
        """Run a subclass hook, recording the entities it creates; the reason it failed, or ''."""
        self._phase = entities
        try:
            hook()
        except ConfigureError as exc:
            return str(exc)
        except Exception as exc:  # a transition must report, not raise (rclpy would turn it into ERROR silently)
            return f'{type(exc).__name__}: {exc}{_where(exc)}'
        finally:
            self._phase = None
        return ''

    def _release(self, entities: list, hook: Callable[[], None]) -> None:
        """Destroy the phase's entities (newest first; workers finish their item and stop), then run the hook, so it
        never races a callback or a worker."""
        while entities:
            destroy, entity = entities.pop()
            destroy(entity)
        try:
            hook()
        except Exception as exc:  # releasing must finish whatever a subclass hook does
            self.get_logger().error(f'{hook.__name__} raised {type(exc).__name__}: {exc}{_where(exc)}')

    def _parameter_changed(self, name: str, value: Any) -> None:
        self.get_logger().info(f'parameter {name} = {value!r}')
        self.on_parameter_change(name, value)

    # -- the node boundary: every callback guarded, every entity owned by the phase that made it -----------------
    def _record(self, destroy: Callable[[Any], Any], entity):
        if self._phase is not None:
            self._phase.append((destroy, entity))
        return entity

    def _guard(self, callback: Callable, what: str, service: bool = False) -> Callable:
        if not self._boundary:
            return callback

        def guarded(*args):
            try:
                return callback(*args)
            except Exception as exc:  # the node boundary: log, count, keep the executor and the graph running
                self.diagnostics.error(what, f'{type(exc).__name__}: {exc}')
                self.get_logger().error(f'{what}: {type(exc).__name__}: {exc}{_where(exc)}; the node keeps running',
                                        throttle_duration_sec=5.0)
                if service:  # answer the caller instead of leaving it waiting
                    response = args[-1]
                    if hasattr(response, 'success'):
                        response.success = False
                    if hasattr(response, 'message'):
                        response.message = f'internal error: {type(exc).__name__}: {exc}'
                    return response
                return None
        return guarded

    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        handler = self._guard(callback, f'callback on {topic}')
        if topic in self.STREAMS and self._boundary:
            inner = handler

            def handler(msg, _inner=inner, _topic=topic):
                self.diagnostics.input(_topic)
                return _inner(msg)
        return self._record(self.destroy_subscription,
                            super().create_subscription(msg_type, topic, handler, qos_profile, **kwargs))

    def create_timer(self, timer_period_sec, callback, *args, **kwargs):
        return self._record(self.destroy_timer, super().create_timer(
            timer_period_sec, self._guard(callback, f'timer {getattr(callback, "__name__", "")}'), *args, **kwargs))

    def create_service(self, srv_type, srv_name, callback, **kwargs):
        return self._record(self.destroy_service, super().create_service(
            srv_type, srv_name, self._guard(callback, f'service {srv_name}', service=True), **kwargs))

    def create_publisher(self, msg_type, topic, qos_profile, **kwargs):
        return self._record(self.destroy_publisher, super().create_publisher(msg_type, topic, qos_profile, **kwargs))

    def create_client(self, srv_type, srv_name, **kwargs):
        return self._record(self.destroy_client, super().create_client(srv_type, srv_name, **kwargs))

    def create_worker(self, fn: Callable[[Any], None], what: str) -> LatestWorker:
        """A LatestWorker running `fn` guarded like a callback, stopped by the transition that undoes its phase."""
        return self._record(LatestWorker.stop, LatestWorker(self._guard(fn, what), name=f'{self.get_name()} {what}'))


def bring_up(node: PipelineNode) -> bool:
    """Configure and activate `node` (what `autostart:=true` does); False, with the reason logged, when a transition
    fails and the node stays where it stopped."""
    return node.trigger_configure() == TransitionCallbackReturn.SUCCESS \
        and node.trigger_activate() == TransitionCallbackReturn.SUCCESS
