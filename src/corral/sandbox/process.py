"""The host's end of one sandboxed process: run executions in it, and watch it.

Everything an execution does outside its own memory comes through here: each
CALL frame is counted against the request budget before the host does the work,
the wall deadline and the CPU budget are enforced from outside (SIGKILL through
the pidfd cannot be caught or ignored), and CPU time and peak memory are read
from the kernel, not reported by the sandboxed code (``corral.sandbox.accounting``).

Over 500 lines, on purpose: ``SandboxProcess`` is one state machine (frames in, calls
answered, results, watchdogs before and after the result, death), and each of its
states is read against the others; split, a reader would follow one protocol across
modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from corral import codec
from corral.db import bridge
from corral.errors import ProtocolError, RequestLimitExceeded, ResultTooLarge, SandboxError
from corral.sandbox import protocol
from corral.sandbox.accounting import (
    ExitInfo,
    death_message,
    out_of_memory,
    outcome_of_death,
    peak_rss_bytes,
    process_cpu_s,
    reset_peak_rss,
)
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.sandbox.memcg import MemoryGroup
from corral.sdk.errors import wire_name
from corral.sdk.operations import Op

#: What tracebacks call agent code whose caller gave it no name.
AGENT_FILENAME = "<agent>"

ToolHandler = Callable[[str, list[Any]], Any]
"""Does one tool operation for the execution's instance; the host binds the scope.

It returns the operation's value, or an awaitable of it when the work has to wait
(a PostgreSQL round trip, an HTTP request); a plain value is answered at once.
"""

Delivery = Literal["request", "body"]
"""What a webhook delivery's handler gets as its first argument, which the host passes as
``corral.sdk.webhooks.request_wire``: the ``WebhookRequest`` ("request"), or only its
parsed body ("body": a plugin's posted tick). The sandbox builds either, so a body that
does not parse fails in the agent's execution, where its author sees why.
"""

#: CPU a process may use after it reported its result: the runtime's own bookkeeping
#: then takes well under a millisecond. More means the agent's code is still running
#: (it sent a completion of its own, or left a thread busy), and the process is stopped.
AFTER_DONE_CPU_S = 0.02
#: An idle process is checked for that this long after its result, then at doubling
#: intervals up to the last: a process computing in secret is stopped within about this.
_IDLE_CHECKS_S = (0.05, 5.0)
#: Characters of an error message the agent is sent; the rest is cut.
MAX_ERROR_MESSAGE = 4096
#: Arguments a CALL may carry; the SDK's operations take at most four.
MAX_CALL_ARGS = 16
#: Bytes of agent values the host decodes at once in one turn of the event loop (one
#: read from a process's socket): a few milliseconds at most, whatever they hold. A
#: frame past that is decoded in steps, the loop running between them (``_in_steps``).
DECODE_AT_ONCE = 64 * 1024
_BYTES_ONLY = frozenset({bytes})
_CORES = os.cpu_count() or 1


def new_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def resolve_future(future: asyncio.Future[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def reject_future(future: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)


@dataclass
class _Execution:
    """What the host tracks while one execution runs in a process."""

    exec_id: int
    result: ExecutionResult
    limits: Limits
    tools: ToolHandler
    finished: asyncio.Future[None]
    #: The replies still awaited; cancelled when the execution ends.
    waiting: set[asyncio.Future[Any]] = field(default_factory=set)
    #: Log lines past protocol.MAX_LOG_LINES: counted by the host or reported (DROPPED).
    dropped_logs: int = 0


class _CpuWatchdog:
    """Kills the process once this execution has used ``cpu_s`` of CPU.

    Timers, not a task: a task per execution cost two event-loop iterations and a
    read of the process's CPU time at its start, when none can have been used.
    """

    def __init__(self, process: SandboxProcess, cpu_before: float, cpu_s: float) -> None:
        self._process = process
        self._cpu_before = cpu_before
        self._cpu_s = cpu_s
        self._timer = self._after(cpu_s)

    def _after(self, left_s: float) -> asyncio.TimerHandle:
        # All cores busy is the fastest the budget can run out.
        return asyncio.get_running_loop().call_later(max(0.01, left_s / _CORES), self._check)

    def _check(self) -> None:
        try:
            used = process_cpu_s(self._process.pid) - self._cpu_before
        except OSError:
            return
        if used >= self._cpu_s:
            self._process.kill(Outcome.CPU_LIMIT)
        else:
            self._timer = self._after(self._cpu_s - used)

    def cancel(self) -> None:
        self._timer.cancel()


class SandboxProcess(asyncio.Protocol):
    """One sandboxed process: runs invocations one at a time until retired.

    Frames are handled as they arrive, inside ``data_received``: a tool call that
    can be answered without waiting (SQLite, memory) is answered before the event
    loop does anything else, which is what keeps a store call from inside the
    sandbox to a few tens of microseconds of host time.
    """

    def __init__(
        self,
        pid: int,
        pidfd: int,
        exited: asyncio.Future[ExitInfo],
        memory: MemoryGroup | None = None,
    ) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self.exited = exited
        self._memory = memory
        self._oom_kills = 0
        self.executions = 0
        self._ids = itertools.count(1)
        self._killed_for: Outcome | None = None
        self._frames = protocol.FrameReader()
        self._transport: asyncio.Transport | None = None
        self._ready: asyncio.Future[None] = new_future()
        self._current: _Execution | None = None
        #: Frames that arrived while an earlier one is decoded in steps: they wait their turn.
        self._held: list[list[Any]] | None = None
        #: Bytes of agent values decoded at once in this turn (see ``DECODE_AT_ONCE``).
        self._decoded_at_once = 0
        #: The process left something running (a thread) and must not be reused.
        self.wants_retirement = False
        # Since its last result: its CPU clock then, that result (amended if the process
        # goes on computing), whom to tell, and the timer of the next idle check.
        self._cpu_at_done: float | None = None
        self._last: ExecutionResult | None = None
        self._on_overrun: Callable[[], None] | None = None
        self._idle_check: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return not self.exited.done() and self._killed_for is None

    @property
    def reusable(self) -> bool:
        return self.alive and not self.wants_retirement and not self._kept_running()

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._frames.feed(data)
        except ProtocolError as exc:
            self._violation(exc)
            return
        if self._held is None:
            self._handle(messages)
        else:
            self._held += messages

    def _handle(self, messages: list[list[Any]]) -> None:
        self._decoded_at_once = 0
        unhandled = iter(messages)
        try:
            for message in unhandled:
                self._dispatch(message)
                if self._held is not None:  # that one is being decoded in steps
                    self._held += unhandled
                    return
        except ProtocolError as exc:
            self._violation(exc)

    def _in_steps(self, step: Callable[[], None]) -> None:
        """Run ``step``, which decodes a large frame, so that it cannot hold up the loop.

        It runs in a greenlet, and its decoding gives the event loop a turn every
        millisecond (``bridge.pause``): other executions' frames and timers keep being
        served meanwhile. Until it is over, this process's later frames wait (read no
        further from its socket), so they are still handled in the order they were sent.
        """

        def run() -> None:
            try:
                step()
            except ProtocolError as exc:  # nobody is left to raise it to
                self._violation(exc)

        over: asyncio.Future[None] = new_future()
        bridge.start(run, None, over, self._steps_over)
        if not over.done():
            self._held = []
            if self._transport is not None:
                self._transport.pause_reading()

    def _steps_over(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            if self._transport is not None:
                self._transport.resume_reading()
            self._handle(held)

    def connection_lost(self, exc: Exception | None) -> None:
        hangup = ConnectionResetError("the sandboxed process closed its channel")
        reject_future(self._ready, hangup)
        if self._current is not None:
            reject_future(self._current.finished, hangup)

    # -- lifecycle -----------------------------------------------------------------

    async def wait_ready(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout=30)
        except BaseException:
            self.kill(Outcome.KILLED)
            raise

    def kill(self, reason: Outcome) -> None:
        if self._killed_for is None:
            self._killed_for = reason
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def close(self) -> None:
        """Retire: close the channel (the process exits on EOF), then release the pidfd.

        A process that does not exit on EOF is busy: if it has used CPU since its last
        result, that result is amended (:meth:`_overran`) once it is dead.
        """
        self._kept_running()
        if self._transport is not None:
            self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), timeout=2)
        except Exception:  # a timeout, or the zygote is gone: make sure it is dead
            self.kill(Outcome.KILLED)
            with contextlib.suppress(Exception):
                info = await asyncio.wait_for(asyncio.shield(self.exited), timeout=1)
                if self._cpu_at_done is not None:
                    self._overran(info.cpu_s - self._cpu_at_done)
        finally:  # even when cancelled: a pidfd is a descriptor the host would leak
            self._stop_watching()
            if self._pidfd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._pidfd)
                self._pidfd = -1
        if self._memory is not None:
            with contextlib.suppress(SandboxError):  # Zygote.close sweeps up what is left
                self._memory.remove()

    # -- executions ----------------------------------------------------------------

    async def describe(
        self, code: str, limits: Limits, *, filename: str = AGENT_FILENAME
    ) -> ExecutionResult:
        """Load the agent and report its class, methods, limits and network list."""
        spec = {"code": code, "filename": filename, "describe": True}
        return await self._run(spec, limits, _no_tools)

    async def execute(
        self,
        code: str,
        method: str,
        args: list[Any],
        limits: Limits,
        tools: ToolHandler,
        *,
        strict: bool = False,
        on_overrun: Callable[[], None] | None = None,
        filename: str = AGENT_FILENAME,
        delivery: Delivery | None = None,
    ) -> ExecutionResult:
        """Run ``method(*args)`` of the agent in ``code`` under ``limits``.

        ``filename`` is what the code is called in tracebacks: the author's file where
        it is known (``corral exec``), else the agent and its version. ``strict`` asks
        the process to report what the execution left behind in module globals or class
        attributes: state that a fresh process would lose.

        The result is returned as soon as the process reports it. Should the process
        go on computing after that (see :data:`AFTER_DONE_CPU_S`), it is killed, the
        returned result is amended in place (outcome ``killed``, the CPU charged) and
        ``on_overrun`` is called, so that a record already written can be corrected.

        ``delivery`` set: ``args[0]`` is a webhook delivery's ``request_wire``, which the
        sandbox hands the method as a ``WebhookRequest`` or its parsed body (:data:`Delivery`).
        """
        spec = {
            "code": code,
            "filename": filename,
            "method": method,
            "args": codec.encode(args, path="arguments"),
            "strict": strict,
            "delivery": delivery,
        }
        return await self._run(spec, limits, tools, on_overrun)

    async def _run(
        self,
        spec: dict[str, Any],
        limits: Limits,
        tools: ToolHandler,
        on_overrun: Callable[[], None] | None = None,
    ) -> ExecutionResult:
        if self._transport is None or self._current is not None:
            raise SandboxError("a sandboxed process runs one execution at a time")
        self._kept_running()  # CPU since the last result is nobody's: never this one's
        self._stop_watching()
        self.executions += 1
        result = ExecutionResult(Outcome.OK)
        started = time.monotonic()
        cpu_before = process_cpu_s(self.pid)
        if self._memory is not None:
            self._memory.reset_peak()  # so the peak is this execution's own
            self._oom_kills = self._memory.oom_kills()
        else:
            reset_peak_rss(self.pid)
        spec |= {
            "requests": limits.requests,
            "timeout_ms": limits.timeout_s * 1000,
            "cpu_ms": limits.cpu_s * 1000,
        }
        current = self._current = _Execution(next(self._ids), result, limits, tools, new_future())
        watchdog = _CpuWatchdog(self, cpu_before, limits.cpu_s)
        try:
            self._transport.write(protocol.pack([protocol.INVOKE, current.exec_id, spec]))
            async with asyncio.timeout(limits.timeout_s):
                await current.finished
        except TimeoutError:
            self.kill(Outcome.TIMEOUT)
        except ConnectionError:
            # It hung up without finishing. If it is dying, its exit status says why
            # (below); if it lingers, it is killed: no execution is "ok" without DONE.
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout=1)
            except TimeoutError:
                self.kill(Outcome.KILLED)
        except ProtocolError as exc:
            self.kill(Outcome.KILLED)
            result.error = {"type": "ProtocolError", "message": str(exc), "traceback": ""}
        finally:
            watchdog.cancel()
            for task in current.waiting:
                task.cancel()
            self._current = None
        result.duration_ms = (time.monotonic() - started) * 1000
        if current.dropped_logs:
            result.logs.append(
                (
                    "warning",
                    f"{current.dropped_logs:,} more log lines were dropped: an execution "
                    f"keeps at most {protocol.MAX_LOG_LINES:,}",
                )
            )
        await self._account(result, cpu_before, limits)
        if self.alive:
            self._watch(result, cpu_before + result.cpu_ms / 1000, on_overrun)
        return result

    # -- CPU after the result ------------------------------------------------------

    def _watch(
        self, result: ExecutionResult, cpu_at_done: float, on_overrun: Callable[[], None] | None
    ) -> None:
        """Keep an eye on the process until its next execution: it should be idle."""
        self._cpu_at_done, self._last, self._on_overrun = cpu_at_done, result, on_overrun
        self._schedule_idle_check(_IDLE_CHECKS_S[0])

    def _schedule_idle_check(self, delay_s: float) -> None:
        def check() -> None:
            if self._cpu_at_done is not None and self.alive and not self._kept_running():
                self._schedule_idle_check(min(delay_s * 2, _IDLE_CHECKS_S[1]))

        self._idle_check = asyncio.get_running_loop().call_later(delay_s, check)

    def _stop_watching(self) -> None:
        if self._idle_check is not None:
            self._idle_check.cancel()
        self._idle_check = self._cpu_at_done = self._last = self._on_overrun = None

    def _kept_running(self) -> bool:
        """True (and the process killed) if it has computed since it reported its result."""
        if self._cpu_at_done is None or not self.alive:
            return False
        try:
            used = process_cpu_s(self.pid) - self._cpu_at_done
        except OSError:
            return False
        if used <= AFTER_DONE_CPU_S:
            return False
        self.kill(Outcome.KILLED)
        self._overran(used)
        return True

    def _overran(self, used_s: float) -> None:
        """Charge ``used_s`` of CPU after the result to that result, and say so."""
        last, on_overrun = self._last, self._on_overrun
        self._stop_watching()
        if last is None or used_s <= AFTER_DONE_CPU_S:
            return
        last.kept_running(used_s * 1000)
        if on_overrun is not None:
            on_overrun()

    def _violation(self, exc: ProtocolError) -> None:
        """A broken frame: the execution ends with the error; the process is killed."""
        self._frames = protocol.FrameReader()  # nothing more it sends is trusted
        if self._held:
            self._held.clear()
        if self._current is not None and not self._current.finished.done():
            self._current.finished.set_exception(exc)
        else:
            self.kill(Outcome.KILLED)

    def _dispatch(self, message: list[Any]) -> None:
        kind = message[0]
        current = self._current
        if kind == protocol.READY and not self._ready.done():
            self._ready.set_result(None)
            return
        if current is None or current.finished.done():
            # Between executions only a thread the agent left behind can speak: the
            # process already asked to be retired, so its words are dropped.
            self.wants_retirement = True
            return
        if kind == protocol.CALL:
            self._call(message, current)
        elif kind == protocol.LOG:
            logs = current.result.logs
            if len(logs) < protocol.MAX_LOG_LINES:
                level, line = str(message[1])[:16], str(message[2])
                logs.append((level, line[: protocol.MAX_LOG_LINE]))
            else:
                current.dropped_logs += 1
        elif kind == protocol.DROPPED:
            if type(message[1]) is not int or not 0 <= message[1] < 2**63:
                raise ProtocolError("a DROPPED message needs a count")
            current.dropped_logs += message[1]
        elif kind in (protocol.DONE, protocol.FAIL):
            if message[1] != current.exec_id:
                raise ProtocolError(f"{kind!r} for execution {message[1]!r}, not {current.exec_id}")
            self.wants_retirement = bool(message[3])
            if kind == protocol.FAIL:
                self._failed(message[2], current)
                current.finished.set_result(None)
            elif (
                type(message[2]) is not bytes
                or len(message[2]) > protocol.MAX_RESULT
                or self._at_once(len(message[2]))
            ):
                self._done(message[2], current, None)
            else:
                self._in_steps(lambda: self._done(message[2], current, _paced()))
        else:
            raise ProtocolError(f"unexpected {kind!r} message during an execution")

    def _at_once(self, size: int) -> bool:
        """Whether ``size`` more bytes may be decoded at once in this turn."""
        self._decoded_at_once += size
        return self._decoded_at_once <= DECODE_AT_ONCE

    def _done(self, encoded: Any, current: _Execution, pacing: codec.Pacing | None) -> None:
        result = current.result
        if type(encoded) is bytes and len(encoded) > protocol.MAX_RESULT:
            # The child refuses these itself; one that sends it anyway gets the same.
            too_large = ResultTooLarge.of(len(encoded), protocol.MAX_RESULT)
            result.outcome = Outcome.ERROR
            result.error = {
                "type": type(too_large).__name__,
                "message": str(too_large),
                "traceback": "",
            }
        else:
            try:
                result.result = codec.decode(encoded, pacing=pacing)
            except Exception as exc:  # garbage where a value should be
                raise ProtocolError(
                    f"the result cannot be decoded: {str(exc) or type(exc).__name__}"
                ) from None
        if not current.finished.done():  # it may have timed out while decoded in steps
            current.finished.set_result(None)

    @staticmethod
    def _failed(error: Any, current: _Execution) -> None:
        if type(error) is not dict:
            raise ProtocolError("a FAIL message needs an error object")
        info = {
            k: str(error.get(k, ""))[: protocol.MAX_ERROR_TEXT]
            for k in ("type", "message", "traceback")
        }
        result = current.result
        result.error = info
        result.outcome = {
            "MemoryError": Outcome.MEMORY_LIMIT,
            "RequestLimitExceeded": Outcome.REQUEST_LIMIT,
        }.get(info["type"], Outcome.ERROR)
        if result.outcome is Outcome.MEMORY_LIMIT:
            info["message"] = out_of_memory(current.limits)

    def _call(self, message: list[Any], current: _Execution) -> None:
        _, call_id, op, raw_args = message
        if (
            type(op) is not str
            or type(raw_args) is not list
            or len(raw_args) > MAX_CALL_ARGS
            or not _BYTES_ONLY.issuperset(map(type, raw_args))
        ):
            raise ProtocolError(
                f"a CALL needs an operation name and a list of at most {MAX_CALL_ARGS} "
                "encoded arguments"
            )
        current.result.requests_used += 1
        if current.result.requests_used > current.limits.requests:
            self._reply_error(
                call_id,
                RequestLimitExceeded(
                    f"this execution has used its {current.limits.requests}-request budget"
                ),
            )
        elif op == Op.RUN_INLINE:
            self._reply_value(call_id, None)
        elif self._at_once(sum(map(len, raw_args))):
            self._perform(call_id, op, raw_args, current, None)
        else:
            # One pacing for all the arguments: one container budget.
            self._in_steps(lambda: self._perform(call_id, op, raw_args, current, _paced()))

    def _perform(
        self,
        call_id: int,
        op: str,
        raw_args: list[bytes],
        current: _Execution,
        pacing: codec.Pacing | None,
    ) -> None:
        """Decode the arguments and do the operation; the agent sees any error."""
        try:
            try:
                args = [codec.decode(arg, pacing=pacing) for arg in raw_args]
            except ValueError as exc:
                raise ValueError(f"the arguments of {op!r} cannot be decoded: {exc}") from None
            if current.finished.done():  # it ended while they were decoded in steps
                return
            value = current.tools(op, args)
        except Exception as exc:  # the agent sees the error; the host carries on
            self._reply_error(call_id, exc)
            return
        if inspect.isawaitable(value):
            # A future (a database call) is answered from its own callback: a task
            # awaiting it would cost two event-loop iterations more per call.
            pending = asyncio.ensure_future(value)
            current.waiting.add(pending)
            pending.add_done_callback(lambda done: self._reply_later(call_id, done, current))
        else:
            self._reply_value(call_id, value)

    def _reply_later(self, call_id: int, done: asyncio.Future[Any], current: _Execution) -> None:
        current.waiting.discard(done)
        if done.cancelled():  # the execution ended meanwhile: nobody waits for the answer
            return
        error = done.exception()
        if isinstance(error, Exception):
            self._reply_error(call_id, error)
        elif error is not None:  # not the agent's to see (KeyboardInterrupt, say)
            raise error
        else:
            self._reply_value(call_id, done.result())

    def _reply_value(self, call_id: int, value: Any) -> None:
        try:
            reply = [protocol.REPLY, call_id, True, codec.encode(value)]
        except Exception as exc:
            self._reply_error(call_id, exc)
            return
        self._send(reply)

    def _reply_error(self, call_id: int, exc: Exception) -> None:
        message = str(exc)
        if len(message) > MAX_ERROR_MESSAGE:  # one naming a huge argument, say
            message = f"{message[:MAX_ERROR_MESSAGE]}... ({len(message):,} characters)"
        error = {"type": wire_name(exc), "message": message}
        self._send([protocol.REPLY, call_id, False, error])

    def _send(self, message: list[Any]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(protocol.pack(message))

    def _peak_bytes(self) -> int:
        """This execution's peak with a memory group, else the process's lifetime peak."""
        if self._memory is not None:
            return self._memory.peak_bytes()
        return peak_rss_bytes(self.pid)

    async def _account(self, result: ExecutionResult, cpu_before: float, limits: Limits) -> None:
        if self.alive:
            try:
                result.cpu_ms = (process_cpu_s(self.pid) - cpu_before) * 1000
                result.peak_rss_bytes = self._peak_bytes()
                return
            except OSError:
                pass  # it died just now: fall through to its exit information
        try:
            info = await asyncio.wait_for(asyncio.shield(self.exited), timeout=5)
        except TimeoutError:
            self.kill(Outcome.KILLED)
            info = await self.exited
        result.cpu_ms = max(0.0, (info.cpu_s - cpu_before) * 1000)
        result.peak_rss_bytes = info.maxrss_bytes
        if self._memory is not None:
            result.peak_rss_bytes = self._memory.peak_bytes()
            if self._memory.oom_kills() > self._oom_kills:
                self._killed_for = self._killed_for or Outcome.MEMORY_LIMIT
        if result.outcome is Outcome.OK or self._killed_for is not None:
            result.outcome = self._killed_for or outcome_of_death(info)
        if result.error is None:
            result.error = {
                "type": result.outcome.value,
                "message": death_message(result.outcome, info, limits),
                "traceback": "",
            }
        self._killed_for = self._killed_for or result.outcome


def _paced() -> codec.Pacing:
    """How a frame decoded in steps (``_in_steps``) decodes its values."""
    return codec.Pacing(bridge.pause)


def _no_tools(op: str, args: list[Any]) -> Any:
    raise PermissionError("no tools are available while an agent is being described")


__all__ = ["SandboxError", "SandboxProcess", "ToolHandler"]
