"""The runtime inside a sandboxed process: load agent code, run invocations.

It speaks the protocol of :mod:`corral.sandbox.protocol` over the inherited
socket and implements the SDK's ``ToolChannel``: every tool call becomes a CALL
frame and waits for the host's REPLY. One invocation runs at a time; each gets a
fresh agent object, and anything it left running is cancelled when it ends, so
no work leaks from one execution into the next.

Imported in the zygote before it forks; must not import host-side code.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import linecache
import logging
import math
import os
import socket
import sys
import threading
import time
import traceback
import types
from typing import Any, TextIO

from corral import codec
from corral.errors import (
    AgentDefinitionError,
    ProtocolError,
    RequestLimitExceeded,
    ResultTooLarge,
    UnknownMethod,
)
from corral.sandbox import audit, protocol
from corral.sdk.agent import Agent, callable_methods
from corral.sdk.errors import from_wire
from corral.sdk.webhooks import WebhookRequest, check_wire

# Keep a few compiled agent versions: a warm process serves one instance, and an
# instance has one version at a time, but a deploy may race an execution.
_MODULE_CACHE_SIZE = 4


def error_info(exc: BaseException) -> dict[str, str]:
    """The error as the author should see it: their frames, not the runtime's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    # Cut to size: a FAIL frame carrying a megabyte-long message would be over the
    # frame limit, and the execution would end in a timeout instead of its error.
    limit = protocol.MAX_ERROR_TEXT
    return {
        "type": type(exc).__name__[:200],
        "message": str(exc)[:limit],
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb))[-limit:],
    }


def load_agent_class(code: str, digest: str, filename: str) -> type[Agent]:
    """Execute agent source in a fresh module and find its Agent class.

    A module may define helper base classes; the agent is the one Agent subclass
    that no other class in the module extends. ``filename`` is what tracebacks call
    the code: the author's file, or the agent and version the host ran.
    """
    module = types.ModuleType(f"corral_agent_{digest}")
    module.__file__ = filename
    # Tracebacks then quote the agent's own lines although no file exists here.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compile(code, module.__file__, "exec"), module.__dict__)
    except SyntaxError as exc:
        # Not str(exc): it names the module's made-up file, which means nothing to the author.
        raise AgentDefinitionError(
            f"the agent code does not compile: {exc.msg} (line {exc.lineno})"
        ) from exc
    defined = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Agent)
        and value.__module__ == module.__name__
    ]
    leaves = [
        cls for cls in defined if not any(o is not cls and issubclass(o, cls) for o in defined)
    ]
    if len(leaves) != 1:
        names = ", ".join(sorted(cls.__name__ for cls in leaves)) or "none"
        raise AgentDefinitionError(
            f"the agent code must define exactly one Agent (or Twist) class; found {names}"
        )
    return leaves[0]


def delivered(kind: str, args: list[Any]) -> list[Any]:
    """``args`` with the webhook delivery in front (a ``request_wire``) replaced by what
    the handler gets: the ``WebhookRequest`` (``kind`` "request") or its parsed body
    ("body"). The body is parsed here, so a ``WebhookBodyError`` is the execution's failure,
    as any error of the agent's is. A malformed delivery is the host's bug: it fails the
    execution with a ``ProtocolError`` that says so, and the process serves on.
    """
    try:
        if kind not in ("request", "body"):
            raise ValueError(f"unknown kind {kind!r}")
        if not args:
            raise ValueError("no request in front of the arguments")
        check_wire(args[0])
    except (TypeError, ValueError) as exc:
        raise ProtocolError(
            f"the host sent a malformed webhook delivery ({exc}); this is a bug in Corral, "
            "not in the agent"
        ) from None
    request = WebhookRequest.from_wire(args[0])
    return [request if kind == "request" else request.body, *args[1:]]


def describe(cls: type[Agent], methods: frozenset[str]) -> dict[str, Any]:
    """What the host needs to know about an agent without running its code itself."""
    return {
        "class": cls.__name__,
        "methods": sorted(methods),
        # As declared: the host checks them. dict() would turn pairs into a dict and fail
        # on anything else without naming limits; list() would split a lone str into letters.
        "limits": cls.limits,
        "network": cls.network,
        "tick_ms": getattr(cls, "tick_ms", None),
    }


class _Leftovers:
    """What an execution leaves in module globals and class attributes.

    A warm process keeps them, so code that reads them back works in development
    and fails when the next execution lands in a fresh process. Strict mode reports
    every name an execution rebound, added, removed or resized.
    """

    def __init__(self, cls: type[Agent]) -> None:
        self._places: list[tuple[str, dict[str, Any]]] = [
            (f"class attribute {c.__name__}.", c.__dict__)  # type: ignore[misc]
            for c in cls.__mro__
            if c.__module__ == cls.__module__
        ]
        self._places.append(("module global ", _module_globals(cls)))
        self._before = [self._fingerprints(place) for _, place in self._places]

    @staticmethod
    def _fingerprints(place: dict[str, Any]) -> dict[str, tuple[int, int | None]]:
        return {
            name: (id(value), len(value) if isinstance(value, _SIZED) else None)
            for name, value in list(place.items())
            if not name.startswith("__")
        }

    def report(self) -> list[str]:
        lines = []
        for (label, place), before in zip(self._places, self._before, strict=True):
            after = self._fingerprints(place)
            for name in sorted(before.keys() | after.keys()):
                if before.get(name) != after.get(name):
                    lines.append(
                        f"strict mode: this execution changed {label}{name}; the next "
                        "execution may run in a fresh process without it: keep state in "
                        "self.store"
                    )
        return lines


_SIZED = (list, dict, set, bytearray)


def _module_globals(cls: type[Agent]) -> dict[str, Any]:
    """The namespace the agent's code ran in (its module is not in sys.modules)."""
    for value in vars(cls).values():
        if isinstance(value, types.FunctionType):
            return value.__globals__
    return {}


class _LogStream:
    """Turns writes to stdout/stderr into LOG frames, a line at a time."""

    def __init__(self, runtime: ChildRuntime, level: str) -> None:
        self._runtime = runtime
        self._level = level
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        # A line is cut to MAX_LOG_LINE when sent: keep no more of an unfinished one, or
        # writes without a newline would grow it (and the cost of each write) forever.
        self._partial = lines.pop()[: protocol.MAX_LOG_LINE]
        for line in lines:
            self._runtime.log(self._level, line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._runtime.log(self._level, self._partial)
            self._partial = ""


class _LogHandler(logging.Handler):
    def __init__(self, runtime: ChildRuntime) -> None:
        super().__init__()
        self._runtime = runtime

    def emit(self, record: logging.LogRecord) -> None:
        self._runtime.log(record.levelname.lower(), self.format(record))


class ChildRuntime(asyncio.Protocol):
    """Serves invocations on one connected socket until the host closes it.

    Frames are handled inside ``data_received``, so a REPLY wakes the waiting
    agent code on the very next turn of the event loop.
    """

    def __init__(self, sock: socket.socket, readable: list[str]) -> None:
        self._sock = sock
        self._readable = readable
        self._transport: asyncio.Transport | None = None
        self._frames = protocol.FrameReader()
        self._closed: asyncio.Future[None] | None = None
        self._running: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._serve_task: asyncio.Task[None] | None = None
        # Loaded agent versions by code digest and file name: the class and the methods
        # it may run.
        self._agents: dict[tuple[str, str], tuple[type[Agent], frozenset[str]]] = {}
        # Per-invocation budget, readable by the agent through self.budget.
        self._requests_left = 0
        self._deadline = 0.0
        self._cpu_deadline = 0.0
        # Log lines sent and dropped in this invocation (protocol.MAX_LOG_LINES).
        self._logged = 0
        self._dropped = 0

    # -- ToolChannel -------------------------------------------------------------

    async def call(self, op: str, *args: Any) -> Any:
        encoded = [codec.encode(arg) for arg in args]  # raises at the agent's call site
        if self._requests_left <= 0:
            raise RequestLimitExceeded(
                "this execution has used its whole request budget; save progress and "
                "continue in a new execution with run_task"
            )
        self._requests_left -= 1
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        self._send([protocol.CALL, call_id, op, encoded])
        return await future

    @property
    def requests_left(self) -> int:
        return self._requests_left

    @property
    def time_left_ms(self) -> int:
        return max(0, math.floor((self._deadline - time.monotonic()) * 1000))

    @property
    def cpu_left_ms(self) -> int:
        return max(0, math.floor((self._cpu_deadline - time.process_time()) * 1000))

    # -- plumbing ----------------------------------------------------------------

    def _send(self, message: list[Any]) -> None:
        assert self._transport is not None
        self._transport.write(protocol.pack(message))

    def log(self, level: str, line: str) -> None:
        """Send one log line, or count it once the execution has sent its share.

        Counting instead of sending is what keeps a print loop cheap: the lines would
        otherwise queue in the transport faster than the host drops them, until the
        process ran out of memory.
        """
        if self._logged >= protocol.MAX_LOG_LINES:
            self._dropped += 1
        elif self._transport is not None and not self._transport.is_closing():
            self._logged += 1
            self._send([protocol.LOG, level, line[: protocol.MAX_LOG_LINE]])

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._frames.feed(data)
        except ProtocolError:
            self._stop()  # the host never sends garbage; give up rather than guess
            return
        for message in messages:
            if message[0] == protocol.REPLY:
                self._reply(message)
            elif message[0] == protocol.INVOKE:
                self._running = asyncio.create_task(self._invoke(message[1], message[2]))

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def _reply(self, message: list[Any]) -> None:
        _, call_id, ok, payload = message
        future = self._pending.pop(call_id, None)
        if future is None or future.done():
            return  # the call was cancelled with its invocation
        if ok:
            future.set_result(codec.decode(payload))
        else:
            future.set_exception(from_wire(payload.get("type", ""), payload.get("message", "")))

    async def serve(self) -> None:
        """Run until the host closes the channel, which is how a process is retired."""
        self._serve_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        await loop.create_connection(lambda: self, sock=self._sock)
        self._install_output_capture()
        # Last, once the event loop and its sockets exist: from here on the agent's
        # own attempts at files, sockets and processes get a helpful PermissionError.
        audit.install(self._readable)
        self._send([protocol.READY, os.getpid()])
        try:
            await self._closed
        finally:
            if self._running is not None:
                self._running.cancel()

    def _install_output_capture(self) -> None:
        out: TextIO = _LogStream(self, "info")  # type: ignore[assignment]
        err: TextIO = _LogStream(self, "error")  # type: ignore[assignment]
        sys.stdout, sys.stderr = out, err
        root = logging.getLogger()
        root.handlers[:] = [_LogHandler(self)]
        root.setLevel(logging.INFO)

    def _agent(self, spec: dict[str, Any]) -> tuple[type[Agent], frozenset[str]]:
        code: str = spec["code"]
        filename = str(spec.get("filename", "<agent>"))
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        agent = self._agents.get((digest, filename))
        if agent is None:
            cls = load_agent_class(code, digest, filename)
            agent = (cls, callable_methods(cls))
            if len(self._agents) >= _MODULE_CACHE_SIZE:
                del self._agents[next(iter(self._agents))]
            self._agents[(digest, filename)] = agent
        return agent

    async def _invoke(self, exec_id: int, spec: dict[str, Any]) -> None:
        self._requests_left = int(spec["requests"])
        self._deadline = time.monotonic() + spec["timeout_ms"] / 1000
        self._cpu_deadline = time.process_time() + spec["cpu_ms"] / 1000
        self._logged = self._dropped = 0
        try:
            cls, methods = self._agent(spec)
            if spec.get("describe"):
                self._finish([protocol.DONE, exec_id, codec.encode(describe(cls, methods))])
                return
            method = spec["method"]
            if method not in methods:
                raise UnknownMethod(
                    f"{cls.__name__} has no method {method!r} that can be invoked "
                    f"(public methods: {', '.join(sorted(methods)) or 'none'})"
                )
            leftovers = _Leftovers(cls) if spec.get("strict") else None
            agent = cls(self)
            args = codec.decode(spec["args"])
            if spec.get("delivery") is not None:
                args = delivered(spec["delivery"], args)
            result = getattr(agent, method)(*args)
            if inspect.isawaitable(result):
                result = await result
            payload = codec.encode(result, path="return value")
            if len(payload) > protocol.MAX_RESULT:
                raise ResultTooLarge.of(len(payload), protocol.MAX_RESULT)
            # Freed here, not after DONE: whatever the execution built is its own work,
            # and the host counts CPU used after DONE as code still running.
            del agent, result
            for line in leftovers.report() if leftovers is not None else ():
                self.log("warning", line)
        except Exception as exc:  # the agent's failure is data for the record
            self._finish([protocol.FAIL, exec_id, error_info(exc)])
        except BaseException as exc:  # SystemExit, cancellation: report, then let it end us
            self._finish([protocol.FAIL, exec_id, error_info(exc)])
            raise
        else:
            self._finish([protocol.DONE, exec_id, payload])

    def _finish(self, message: list[Any]) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._transport is None or self._transport.is_closing():
            return  # the host hung up: the process is ending, and asyncio.run must stop it
        # Nothing the agent started may outlive its execution: cancel its tasks and
        # drop its timers and queued callbacks (asyncio has no public way to list
        # those, hence the private attributes of the base event loop).
        keep: set[object] = {asyncio.current_task(), self._serve_task}
        for task in asyncio.all_tasks():
            if task not in keep:
                task.cancel()
        # A queued wake-up of the runtime's own tasks, and the channel's own reading
        # and writing, must still run.
        keep |= {self, self._transport}
        loop = asyncio.get_running_loop()
        for handle in [*getattr(loop, "_scheduled", ()), *getattr(loop, "_ready", ())]:
            if getattr(handle._callback, "__self__", None) not in keep:
                handle.cancel()
        if self._dropped:
            self._send([protocol.DROPPED, self._dropped])
        # A thread cannot be stopped from outside; a process with one left running
        # asks to be retired rather than carry it into another execution.
        self._send([*message, threading.active_count() > 1])


def run(fd: int, readable: list[str]) -> None:
    """Entry point of a sandboxed process, after its layers are in place."""
    sock = socket.socket(fileno=fd)
    asyncio.run(ChildRuntime(sock, readable).serve())
