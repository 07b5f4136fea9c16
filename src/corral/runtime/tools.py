"""The host's side of every tool an agent may call, bound to one execution's instance.

The sandbox sends an operation name and arguments; this module decides whether
the name is a real operation and runs it against the instance's own store,
tasks, callbacks and fetch (the instance was bound by the host, never taken from
the agent). Database work that cannot block (SQLite) is done at once, inside the
host's I/O callback; PostgreSQL work goes to a thread; a fetch is a coroutine
the host awaits alongside the execution's other calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from corral import codec
from corral.db import bridge
from corral.errors import DecodeLimitExceeded, UnknownOperation
from corral.quotas import Quotas
from corral.runtime.network.fetch import FetchTool
from corral.sandbox.process import ToolHandler
from corral.sdk.http import FETCH_OP
from corral.state import Store
from corral.state.store import OPERATIONS, Clock
from corral.tasks.callbacks import Callbacks
from corral.tasks.queue import NO_ARGS, TaskQueue


def store_tools(store: Store) -> ToolHandler:
    """Only the store: what ``corral exec`` offers."""

    def handle(op: str, args: list[Any]) -> Any:
        family, _, name = op.partition(".")
        if family != "store" or name not in OPERATIONS:
            raise UnknownOperation(f"there is no tool operation {op!r}")
        return store.perform(name, args)

    return handle


def exec_tools(store: Store, fetch: FetchTool) -> ToolHandler:
    """The store and fetch: what ``corral exec`` offers (no worker would run tasks)."""
    stored = store_tools(store)

    def handle(op: str, args: list[Any]) -> Any:
        return fetch(args) if op == FETCH_OP else stored(op, args)

    return handle


class InstanceTools:
    """Store, fetch, tasks and callbacks for one execution of one instance.

    What the agent adds is held to ``quotas`` (its new tasks and callbacks here, its
    store writes by the store it was given).
    """

    def __init__(
        self,
        store: Store,
        queue: TaskQueue,
        callbacks: Callbacks,
        fetch: FetchTool,
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
        self._instance = instance
        self._class_name = class_name
        self._methods = methods
        self._clock = clock
        self._quotas = quotas
        self._on_enqueue = on_enqueue or (lambda: None)
        self._hand_off = hand_off
        self._database = queue.database
        self._blocking = queue.database.blocking
        self._ops: dict[str, Callable[..., Any]] = {
            "callbacks.create": self._create_callback,
            "callbacks.get": self._get_callback,
            "callbacks.delete": lambda token: callbacks.delete(instance, _text(token, "token")),
            "callbacks.delete_all": lambda: callbacks.delete_all(instance),
            "tasks.run_task": self._run_task,
            "tasks.schedule": self._schedule,
            "tasks.schedule_recurring": self._schedule_recurring,
            "tasks.cancel": lambda token: queue.cancel_token(instance, _text(token, "token")),
            "tasks.cancel_all": lambda: queue.cancel_all(instance),
            "tasks.cancel_scheduled": lambda key: queue.cancel_key(instance, _text(key, "key")),
        }

    def __call__(self, op: str, args: list[Any]) -> Any:
        if op.startswith("store."):
            return self._store(op, args)
        if op == FETCH_OP:
            return self._fetch(args)
        handler = self._ops.get(op)
        if handler is None:
            raise UnknownOperation(f"there is no tool operation {op!r}")
        if self._blocking:
            return self._database.call_deferred(handler, *args)  # settled durably later
        return handler(*args)

    def _now(self) -> int:
        return math.floor(self._clock() * 1000)

    def _method(self, name: object) -> str:
        if type(name) is not str or name not in self._methods:
            raise ValueError(f"{self._class_name} has no public method {name!r} a callback can run")
        return name

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


def _checked_args(args: object) -> bytes:
    if type(args) is not bytes or type(_decoded(args)) is not list:
        raise ValueError("callback arguments must be an encoded list")
    return args


def _decoded(data: bytes) -> Any:
    try:
        return codec.decode(data, pacing=codec.Pacing(bridge.pause))
    except DecodeLimitExceeded as exc:
        raise ValueError(f"callback arguments cannot be decoded: {exc}") from None
    except Exception:
        raise ValueError("callback arguments must be an encoded list") from None
