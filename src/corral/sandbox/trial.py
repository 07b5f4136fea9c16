"""Run a function in a throwaway forked child and get back what it returned or raised.

Sandbox layers are irreversible, so the only way to find out whether one works, or what
code sees under it, is to apply it in a process that then dies. The child reports through
a pipe (as JSON, so the report stays data even if the code under test misbehaves) and
always leaves with ``os._exit``: it never returns into the caller's stack, runs no
``atexit`` handlers and flushes no inherited buffers.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    """What happened in the child.

    Exactly one of three things: it returned (``value``), it raised (``error`` is the
    exception's type name, ``errno`` its errno if any, ``message`` its text), or it died
    before reporting (``signal`` or ``exit_code`` says how).
    """

    value: Any = None
    error: str | None = None
    errno: int | None = None
    message: str = ""
    signal: int | None = None
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        """True if the function returned."""
        return self.error is None and self.signal is None and self.exit_code in (None, 0)

    def describe(self) -> str:
        """One line for reports and assertion messages."""
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        if self.error is not None:
            code = f" [errno {self.errno}]" if self.errno is not None else ""
            return f"{self.error}{code}: {self.message}"
        if self.exit_code:
            return f"exited with status {self.exit_code} without reporting"
        return f"returned {self.value!r}"


def run_trial(fn: Callable[[], object], timeout: float = 10.0) -> TrialOutcome:
    """Fork, call ``fn`` in the child, and report its outcome to the parent.

    ``fn`` must return something JSON can encode. A child still running after
    ``timeout`` seconds is killed with SIGKILL and reported as such.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        _child(fn, read_end, write_end)
    os.close(write_end)
    try:
        data, timed_out = _read_until_eof(read_end, timeout)
    finally:
        os.close(read_end)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return TrialOutcome(signal=os.WTERMSIG(status))
    if not data:
        return TrialOutcome(exit_code=os.WEXITSTATUS(status))
    report = json.loads(data)
    return TrialOutcome(
        value=report.get("value"),
        error=report.get("error"),
        errno=report.get("errno"),
        message=report.get("message", ""),
        exit_code=os.WEXITSTATUS(status),
    )


def _child(fn: Callable[[], object], read_end: int, write_end: int) -> None:
    code = 0
    try:
        os.close(read_end)
        try:
            report: dict[str, object] = {"value": fn()}
            data = json.dumps(report).encode()
        except BaseException as exc:  # report everything, SystemExit included
            report = {"error": type(exc).__name__, "message": str(exc)}
            if isinstance(exc, OSError):
                report["errno"] = exc.errno
            data = json.dumps(report, default=repr).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view) :]
    except BaseException:
        code = 70  # could not even report
    finally:
        os._exit(code)


def _read_until_eof(fd: int, timeout: float) -> tuple[bytes, bool]:
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return b"".join(chunks), True
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
