"""The host's side of every tool an agent may call, bound to one execution's instance.

The sandbox sends an operation name (a :class:`corral.sdk.operations.Op`) and
arguments; this module decides whether
the name is a real operation and runs it against the instance's own store,
tasks, callbacks and fetch (the instance was bound by the host, never taken from
the agent). Database work is done at once, inside the host's I/O callback, where
the database answers in microseconds, and awaited where it waits on the network
(``Database.run_deferred``); a fetch is a coroutine the host awaits alongside the
execution's other calls. ``corral exec``, which has no worker, gets
:class:`ExecTools` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from corral import codec
from corral.db import bridge
from corral.errors import (
    DecodeLimitExceeded,
    NeedsServer,
    NeedsWorker,
    UnknownCallback,
    UnknownOperation,
)
from corral.plot.tools import InstancePlot
from corral.quotas import Quotas, callbacks_exceeded
from corral.runtime.network.fetch import FetchTool
from corral.runtime.webhooks import Webhooks
from corral.sandbox.process import ToolHandler
from corral.sdk.operations import Op
from corral.state import Store
from corral.state.store import Clock
from corral.tasks.callbacks import Callbacks, new_token
from corral.tasks.queue import NO_ARGS, TaskQueue

_T = TypeVar("_T")

#: Each store operation the sandbox may call, with the ``Store`` method that does it.
STORE_METHODS: dict[str, str] = {op: op.partition(".")[2] for op in Op if op.startswith("store.")}


def store_tools(store: Store) -> ToolHandler:
    """Only the store's operations, on ``store``: the part every tool handler shares."""

    def handle(op: str, args: list[Any]) -> Any:
        method = STORE_METHODS.get(op)
        if method is None:
            raise UnknownOperation(f"there is no tool operation {op!r}")
        return store.perform(method, args)

    return handle


def plot_tools(plot: InstancePlot, on_enqueue: Callable[[], None]) -> dict[str, Callable[..., Any]]:
    """The plot tool's operations (SPEC §1.4), on one execution's ``plot``. A write may
    queue activity events: once it has committed, ``on_enqueue`` wakes the worker."""

    def waking(write: Callable[..., _T]) -> Callable[..., _T]:
        def written(*args: Any) -> _T:
            result = write(*args)
            on_enqueue()
            return result

        return written

    return {
        Op.PLOT_CREATE: waking(plot.create_activity),
        Op.PLOT_CREATE_MANY: waking(plot.create_activities),
        Op.PLOT_UPDATE: waking(plot.update_activity),
        Op.PLOT_ADD_NOTE: waking(plot.add_note),
        Op.PLOT_GET: plot.get_activity,
        Op.PLOT_GET_BY_SOURCE: plot.get_activity_by_source,
        Op.PLOT_FIND: plot.find_activities,
    }


class InstanceTools:
    """Store, fetch, tasks, callbacks, webhooks and activities for one execution of one
    instance.

    What the agent adds is held to ``quotas`` (its new tasks and callbacks here, its
    store writes by the store it was given).
    """

    def __init__(
        self,
        store: Store,
        queue: TaskQueue,
        callbacks: Callbacks,
        webhooks: Webhooks,
        fetch: FetchTool,
        plot: InstancePlot,
        *,
        instance: str,
        class_name: str,
        methods: frozenset[str],
        clock: Clock,
        quotas: Quotas,
        on_enqueue: Callable[[], None] | None = None,
        hand_off: Callable[[str, str, bytes, int], bool] | None = None,
    ) -> None:
        self._store = store_tools(store)
        self._fetch = fetch
        self._queue = queue
        self._callbacks = callbacks
        self._webhooks = webhooks
        self._instance = instance
        self._class_name = class_name
        self._methods = methods
        self._clock = clock
        self._quotas = quotas
        self._on_enqueue = on_enqueue or (lambda: None)
        self._hand_off = hand_off
        self._database = queue.database
        self._ops: dict[str, Callable[..., Any]] = {
            Op.CALLBACK_CREATE: self._create_callback,
            Op.CALLBACK_GET: self._get_callback,
            Op.CALLBACK_DELETE: lambda token: callbacks.delete(instance, _text(token, "token")),
            Op.CALLBACK_DELETE_ALL: lambda: callbacks.delete_all(instance),
            Op.TASK_RUN: self._run_task,
            Op.TASK_SCHEDULE: self._schedule,
            Op.TASK_SCHEDULE_RECURRING: self._schedule_recurring,
            Op.TASK_CANCEL: lambda token: queue.cancel_token(instance, _text(token, "token")),
            Op.TASK_CANCEL_ALL: lambda: queue.cancel_all(instance),
            Op.TASK_CANCEL_SCHEDULED: lambda key: queue.cancel_key(instance, _text(key, "key")),
            Op.WEBHOOK_CREATE: self._create_webhook,
            Op.WEBHOOK_DELETE: self._delete_webhook,
            Op.WEBHOOK_LIST: self._list_webhooks,
            **plot_tools(plot, self._on_enqueue),
        }

    def __call__(self, op: str, args: list[Any]) -> Any:
        if op.startswith("store."):
            return self._store(op, args)
        if op == Op.FETCH:
            return self._fetch(args)
        handler = self._ops.get(op)
        if handler is None:
            raise UnknownOperation(f"there is no tool operation {op!r}")
        return self._database.run_deferred(handler, *args)  # settled durably later

    @property
    def operations(self) -> frozenset[str]:
        """Every operation these tools answer (the sandbox host answers ``run.inline``)."""
        return frozenset({*STORE_METHODS, Op.FETCH, *self._ops})

    def _now(self) -> int:
        return math.floor(self._clock() * 1000)

    def _method(self, name: object) -> str:
        return _callable_method(name, self._class_name, self._methods)

    def _create_callback(self, method: object, args: object) -> str:
        return self._callbacks.create(
            self._instance,
            self._method(method),
            _checked_args(args),
            now=self._now(),
            quotas=self._quotas,
        )

    def _get_callback(self, token: object) -> list[Any]:
        method, args = self._callbacks.resolve(self._instance, _text(token, "token"))
        return [method, args]

    def _target(self, target: object) -> tuple[str, bytes]:
        if type(target) is list and len(target) == 2 and target[0] == "method":
            return self._method(target[1]), NO_ARGS
        return self._callbacks.resolve(self._instance, _text(target, "callback"))

    def _create_webhook(
        self, target: object, args: object, mode: object, verify: object, max_body_bytes: object
    ) -> str:
        """The new webhook's URL. Its extra arguments, given after the request, are
        the ones given here, or a callback's own (it may not have both)."""
        method, bound = self._target(target)
        extra = _checked_args(args, "webhook")
        if type(target) is str and extra != NO_ARGS:
            raise TypeError(
                "a callback carries its own extra arguments: pass them to self.callback(...), "
                "or pass the method itself to create_webhook with them"
            )
        extra = bound if type(target) is str else extra
        webhook = self._webhooks.create(
            self._instance,
            method,
            extra,
            mode=mode,  # type: ignore[arg-type]  # checked there, with the message
            verify=verify,  # type: ignore[arg-type]
            max_body_bytes=max_body_bytes,  # type: ignore[arg-type]
            now=self._now(),
            quotas=self._quotas,
        )
        return webhook.url(self._webhooks.public_url)

    def _delete_webhook(self, url: object) -> None:
        self._webhooks.delete(self._instance, _text(url, "webhook URL"), now=self._now())

    def _list_webhooks(self) -> list[dict[str, Any]]:
        return [
            {
                "url": webhook.url(self._webhooks.public_url),
                "method": webhook.method,
                "mode": webhook.mode,
                "created_at": datetime.fromtimestamp(webhook.created_at / 1000, UTC),
            }
            for webhook in self._webhooks.list(self._instance)
        ]

    def _run_task(self, target: object, run_at: object) -> str | None:
        method, args = self._target(target)
        now = self._now()
        hand_off = self._hand_off if run_at is None else None
        if hand_off is not None and hand_off(self._instance, method, args, now):
            return None
        token = self._queue.enqueue(
            self._instance,
            method,
            args,
            now=now,
            run_at=_time(run_at, now),
            with_token=run_at is not None,
            quotas=self._quotas,
        )
        self._on_enqueue()
        return token

    def _schedule(self, key: object, target: object, run_at: object, coalesce: object) -> None:
        method, args = self._target(target)
        now = self._now()
        self._queue.schedule(
            self._instance,
            _text(key, "key"),
            method,
            args,
            run_at=_time(run_at, now),
            now=now,
            coalesce=bool(coalesce),
            quotas=self._quotas,
        )
        self._on_enqueue()

    def _schedule_recurring(
        self, key: object, target: object, interval_ms: object, first_run_at: object
    ) -> None:
        method, args = self._target(target)
        if type(interval_ms) is not int or interval_ms < 1:
            raise ValueError(f"interval_ms must be a positive number, got {interval_ms!r}")
        now = self._now()
        self._queue.schedule_recurring(
            self._instance,
            _text(key, "key"),
            method,
            args,
            interval_ms=interval_ms,
            first_run_at=_time(first_run_at, now + interval_ms),
            now=now,
            quotas=self._quotas,
        )
        self._on_enqueue()


class ExecTools:
    """What ``corral exec`` offers: the store, fetch, and callbacks kept for this one
    execution; no tasks, since no worker would ever run them, and no webhooks, since
    no server would ever receive them.

    A callback made here works as under a worker for as long as the execution lasts
    (``run`` it, delete it), held to the same quota. Queueing a task raises
    :class:`NeedsWorker` saying to run the agent under a worker (``corral dev``), and
    nothing is queued; cancelling finds nothing pending, which is no error (SPEC §1.2).
    Making a webhook raises :class:`NeedsServer` likewise; there are none to list, and
    deleting one finds nothing, which is no error. Activities belong to a priority,
    which only an installed instance has: the plot tool's writes raise
    :class:`NeedsWorker` saying so, and its reads find nothing.
    """

    def __init__(
        self,
        store: Store,
        fetch: FetchTool,
        *,
        class_name: str,
        methods: frozenset[str],
        quotas: Quotas,
    ) -> None:
        self._class_name = class_name
        self._methods = methods
        self._quotas = quotas
        self._callbacks: dict[str, tuple[str, bytes]] = {}
        store_op = store_tools(store)
        self._ops: dict[str, Callable[..., Any]] = {
            **{op: lambda *args, op=op: store_op(op, list(args)) for op in STORE_METHODS},
            Op.FETCH: lambda *args: fetch(list(args)),
            Op.CALLBACK_CREATE: self._create_callback,
            Op.CALLBACK_GET: self._get_callback,
            Op.CALLBACK_DELETE: lambda token: self._callbacks.pop(_text(token, "token"), None),
            Op.CALLBACK_DELETE_ALL: self._callbacks.clear,
            Op.TASK_RUN: _needs_worker("run_task"),
            Op.TASK_SCHEDULE: _needs_worker("schedule_task"),
            Op.TASK_SCHEDULE_RECURRING: _needs_worker("schedule_recurring"),
            Op.TASK_CANCEL: _finds_nothing("token"),
            Op.TASK_CANCEL_ALL: lambda: None,
            Op.TASK_CANCEL_SCHEDULED: _finds_nothing("key"),
            Op.WEBHOOK_CREATE: _needs_server,
            Op.WEBHOOK_DELETE: _finds_nothing("webhook URL"),
            Op.WEBHOOK_LIST: lambda: [],
            Op.PLOT_CREATE: _needs_instance("create_activity"),
            Op.PLOT_CREATE_MANY: _needs_instance("create_activities"),
            Op.PLOT_UPDATE: _needs_instance("update_activity"),
            Op.PLOT_ADD_NOTE: _needs_instance("add_note"),
            Op.PLOT_GET: lambda activity_id: None,
            Op.PLOT_GET_BY_SOURCE: lambda source: None,
            Op.PLOT_FIND: lambda *filters: [],
        }

    def __call__(self, op: str, args: list[Any]) -> Any:
        handler = self._ops.get(op)
        if handler is None:
            raise UnknownOperation(f"there is no tool operation {op!r}")
        return handler(*args)

    @property
    def operations(self) -> frozenset[str]:
        """Every operation these tools answer (the sandbox host answers ``run.inline``)."""
        return frozenset(self._ops)

    def _create_callback(self, method: object, args: object) -> str:
        name = _callable_method(method, self._class_name, self._methods)
        if len(self._callbacks) >= self._quotas.callbacks:
            raise callbacks_exceeded(self._quotas, len(self._callbacks))
        token = new_token()
        self._callbacks[token] = (name, _checked_args(args))
        return token

    def _get_callback(self, token: object) -> list[Any]:
        found = self._callbacks.get(_text(token, "token"))
        if found is None:
            raise UnknownCallback(
                f"there is no callback {token!r} in this execution: corral exec keeps the "
                "callbacks an execution makes until it ends, and this one was deleted or "
                "made by another"
            )
        return list(found)


def _needs_worker(method: str) -> Callable[..., None]:
    def refuse(*args: Any) -> None:
        raise NeedsWorker(
            f"{method} needs a worker: corral exec runs one method and no worker, so nothing "
            "was queued; to see the agent's tasks run, run it with corral dev AGENT.py"
        )

    return refuse


def _needs_instance(method: str) -> Callable[..., None]:
    def refuse(*args: Any) -> None:
        raise NeedsWorker(
            f"{method} needs an installed instance: activities belong to the priority an "
            "instance is installed for, and corral exec runs the agent without one, so "
            "nothing was written; run it with corral dev AGENT.py"
        )

    return refuse


def _needs_server(*args: Any) -> None:
    raise NeedsServer(
        "create_webhook needs a server: corral exec runs one method and no server, so no "
        "webhook was made; to receive webhooks, run the agent with corral dev AGENT.py"
    )


def _finds_nothing(what: str) -> Callable[[object], None]:
    """A cancel by ``what`` where nothing is ever pending: its argument checked as under
    a worker, and no error for finding nothing (SPEC §1.2)."""

    def cancel(value: object) -> None:
        _text(value, what)

    return cancel


def _callable_method(name: object, class_name: str, methods: frozenset[str]) -> str:
    """``name`` when it is a method a callback or task may run; else the agent's error."""
    if type(name) is not str or name not in methods:
        raise ValueError(f"{class_name} has no public method {name!r} a callback can run")
    return name


def _text(value: object, what: str) -> str:
    if type(value) is not str or not value:
        raise TypeError(f"a {what} must be a non-empty str, got {type(value).__name__}")
    return value


def _time(value: object, default: int) -> int:
    if value is None:
        return default
    if type(value) is not int:
        raise TypeError(f"a time must be milliseconds since the epoch, got {value!r}")
    return value


def _checked_args(args: object, what: str = "callback") -> bytes:
    if type(args) is not bytes or type(_decoded(args, what)) is not list:
        raise ValueError(f"{what} arguments must be an encoded list")
    return args


def _decoded(data: bytes, what: str) -> Any:
    try:
        return codec.decode(data, pacing=codec.Pacing(bridge.pause))
    except DecodeLimitExceeded as exc:
        raise ValueError(f"{what} arguments cannot be decoded: {exc}") from None
    except Exception:
        raise ValueError(f"{what} arguments must be an encoded list") from None
