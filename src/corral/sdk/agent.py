"""The class agent authors subclass.

An agent object lives for one execution: the runtime builds a fresh one each
time and binds it to that execution's channel. Its attributes are therefore not
memory; ``self.store`` is.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from corral import codec
from corral.sdk import http
from corral.sdk.budget import Budget
from corral.sdk.channel import ToolChannel
from corral.sdk.operations import Op
from corral.sdk.store import StoreClient
from corral.sdk.tools import Tools

LIFECYCLE_HOOKS = frozenset({"activate", "upgrade", "deactivate", "on_activity"})


class Agent:
    #: Outbound URL patterns this agent may fetch; nothing else is reachable.
    network: ClassVar[list[str]] = []
    #: Per-agent overrides of the execution limits (requests, timeout_s, cpu_s, memory_mb),
    #: each up to the operator's ceiling (docs/sandbox.md).
    limits: ClassVar[dict[str, int | float]] = {}

    def __init__(self, channel: ToolChannel) -> None:
        self._channel = channel
        self.store = StoreClient(channel)
        self.budget = Budget(channel)
        #: The platform's tool groups: ``self.tools.network.create_webhook(...)``.
        self.tools = Tools(channel, self._target)

    # The four store shortcuts of the seeds.
    async def get(self, key: str) -> Any:
        return await self.store.get(key)

    async def set(self, key: str, value: Any) -> None:
        await self.store.set(key, value)

    async def clear(self, key: str) -> None:
        await self.store.delete(key)

    async def clear_all(self) -> None:
        await self.store.clear_all()

    async def set_with_ttl(self, key: str, value: Any, ttl_ms: float | timedelta) -> None:
        await self.store.set_with_ttl(key, value, ttl_ms)

    # -- network (SPEC §1.3) --------------------------------------------------------

    async def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        json: Any = None,
        data: http.Body | None = None,
        timeout_s: float | None = None,
    ) -> http.Response:
        """One HTTP request, made by the host; counts as one request of the budget.

        Only URLs the class's ``network`` allow-list permits are fetched; any other
        raises ``PermissionError`` before anything is sent. Outbound requests are
        rate-limited per instance: over the rate, a fetch waits for a slot within
        its timeout or raises ``RateLimited``. See docs/fetch.md.
        """
        spec = http.request(url, method, headers, json, data, timeout_s)
        return http.Response.from_reply(await self._channel.call(Op.FETCH, spec))

    # -- callbacks and tasks (SPEC §1.2) --------------------------------------------

    async def callback(self, method: Callable[..., Any] | str, *extra_args: Any) -> Callback:
        """A persistent token that runs ``method(*caller_args, *extra_args)`` later.

        The method is remembered by name and looked up when the callback runs, in
        the instance's version at that moment.
        """
        args = codec.encode(list(extra_args), path="callback arguments")
        return str(await self._channel.call(Op.CALLBACK_CREATE, self._method_name(method), args))

    async def run(self, callback: Callback | Callable[..., Any], *args: Any) -> Any:
        """Call it now, inside this execution and its request budget; returns its result."""
        if callable(callback):
            name, extra = self._method_name(callback), []
            await self._channel.call(Op.RUN_INLINE)  # counted, like every run
        else:
            name, encoded = await self._channel.call(Op.CALLBACK_GET, callback)
            extra = codec.decode(encoded)
        result = getattr(self, name)(*args, *extra)
        return await result if inspect.isawaitable(result) else result

    async def run_task(
        self, callback: Callback | Callable[..., Any], run_at: datetime | None = None
    ) -> str | None:
        """Run it in a new execution with a fresh budget; with ``run_at``, a cancel token."""
        return await self._channel.call(  # type: ignore[no-any-return]
            Op.TASK_RUN, self._target(callback), _epoch_ms(run_at)
        )

    async def cancel_task(self, token: str) -> None:
        """Cancel the task ``run_task(..., run_at=...)`` gave ``token`` for, unless it has
        started; no error if it already ran, was cancelled, or never existed."""
        await self._channel.call(Op.TASK_CANCEL, token)

    async def cancel_all_tasks(self) -> None:
        """Cancel every task this instance queued with ``run_task`` that has not started.

        Keyed and recurring schedules stay (``cancel_scheduled_task`` ends them by key),
        and so do the platform's own events, such as a lifecycle hook's retry.
        """
        await self._channel.call(Op.TASK_CANCEL_ALL)

    async def schedule_task(
        self,
        key: str,
        callback: Callback | Callable[..., Any],
        run_at: datetime,
        coalesce: bool = False,
    ) -> None:
        """One pending task per key: a pending task under ``key`` is replaced, or with
        ``coalesce`` kept and only ever moved earlier (to ``run_at``, if sooner). The key
        is free again once its task starts, so a task may schedule its own successor."""
        await self._channel.call(
            Op.TASK_SCHEDULE, key, self._target(callback), _epoch_ms(run_at), coalesce
        )

    async def schedule_recurring(
        self,
        key: str,
        callback: Callback | Callable[..., Any],
        interval_ms: float | timedelta,
        first_run_at: datetime | None = None,
    ) -> None:
        """Every ``interval_ms``, whatever each run's outcome, until cancelled."""
        if isinstance(interval_ms, timedelta):
            interval_ms = interval_ms / timedelta(milliseconds=1)
        await self._channel.call(
            Op.TASK_SCHEDULE_RECURRING,
            key,
            self._target(callback),
            math.ceil(interval_ms),
            _epoch_ms(first_run_at),
        )

    async def cancel_scheduled_task(self, key: str) -> None:
        """End the keyed or recurring task under ``key``; no error if there is none."""
        await self._channel.call(Op.TASK_CANCEL_SCHEDULED, key)

    async def delete_callback(self, callback: Callback) -> None:
        """Forget the callback: ``run`` or ``run_task`` of its token then raises
        ``LookupError``. A task already queued from it still runs. No error if unknown."""
        await self._channel.call(Op.CALLBACK_DELETE, callback)

    async def delete_all_callbacks(self) -> None:
        """Forget every callback of this instance (not of any other)."""
        await self._channel.call(Op.CALLBACK_DELETE_ALL)

    def _method_name(self, method: Callable[..., Any] | str) -> str:
        name = method if isinstance(method, str) else getattr(method, "__name__", None)
        if getattr(method, "__self__", self) is not self or not isinstance(name, str):
            raise TypeError(
                "a callback names one of this agent's own methods: pass self.method or its name"
            )
        if name not in callable_methods(type(self)):
            raise ValueError(
                f"{type(self).__name__} has no public method {name!r} a callback can run"
            )
        return name

    def _target(self, callback: Callback | Callable[..., Any]) -> str | list[str]:
        """What the host resolves: a callback token, or a method of this agent."""
        if callable(callback):
            return ["method", self._method_name(callback)]
        if not isinstance(callback, str):
            raise TypeError(f"expected a callback or a method, got {type(callback).__name__}")
        return callback


Callback = str
"""A callback's token: a plain string, so it can be stored and passed around."""


def _epoch_ms(when: datetime | None) -> int | None:
    if when is None:
        return None
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(
            "run_at must be a timezone-aware datetime, e.g. datetime.now(UTC) + timedelta(...)"
        )
    return math.floor(when.timestamp() * 1000)


Twist = Agent
"""The seeds' newer name for the same class."""


def callable_methods(cls: type[Agent]) -> frozenset[str]:
    """Names the runtime may invoke: the public methods the author wrote.

    The SDK's own helpers (``get``, ``set``, ...) are not entry points: a task or a
    webhook naming ``set`` must fail clearly instead of writing to the store.
    """
    return frozenset(
        name
        for klass in cls.__mro__
        if klass is not Agent and issubclass(klass, Agent)
        for name, member in vars(klass).items()
        if not name.startswith("_") and callable(member)
    )
