"""Per-execution limits (SPEC §1.6), their ranges and ceilings, and how an execution ended."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from corral.errors import LimitError


class _Quoted(reprlib.Repr):
    """How a message quotes a value agent code gave: shortened, whatever its size."""

    def repr_int(self, x: int, level: int) -> str:
        # Python refuses to write an int of more than 4,300 digits at all.
        return f"<an integer of {x.bit_length()} bits>" if x.bit_length() > 256 else repr(x)


#: ``repr`` for messages about values agent code gave: bounded, and never raises.
quoted = _Quoted().repr


@dataclass(frozen=True)
class _Range:
    """What one limit accepts."""

    #: How a value reads: "a whole number" where only an int will do.
    kind: str
    whole: bool
    floor: float
    #: The most it may be, whatever the operator's ceiling says.
    most: float

    def check(self, name: str, value: object, ceiling: float, whose: str) -> None:
        """Raise ``LimitError`` unless ``value`` is a finite number of the right kind
        from the floor to ``ceiling`` (``whose`` says who set the ceiling)."""
        if not (
            isinstance(value, int | float)
            and not isinstance(value, bool)  # an int to Python, not a limit to anyone
            and (isinstance(value, int) or not self.whole)
            and self.floor <= value <= ceiling  # False for nan, too
        ):
            raise LimitError(
                f"limit {name} must be {self.kind} from {_number(self.floor)} to "
                f"{_number(ceiling)} ({whose}), got {quoted(value)}"
            )


#: What each limit accepts, by name; the configuration's limits and ceilings too.
# The floors: one request, a millisecond (records keep milliseconds), and 16 MiB,
# the least memory with which docs/sandbox.md shows a fresh process has room to run.
# The most: a million requests, a day of wall or CPU time, 1 TiB; with these every
# number derived from a limit (a lease in milliseconds, an rlimit, a memory
# group's bytes, a timer) stays well inside a 64-bit integer.
RANGES = {
    "requests": _Range("a whole number", whole=True, floor=1, most=1_000_000),
    "timeout_s": _Range("a number of seconds", whole=False, floor=0.001, most=86_400),
    "cpu_s": _Range("a number of seconds", whole=False, floor=0.001, most=86_400),
    "memory_mb": _Range("a whole number of MiB", whole=True, floor=16, most=1 << 20),
}


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


@dataclass(frozen=True)
class Limits:
    """Per-execution limits (SPEC §1.6), each a finite number in its range.

    Every Limits is checked as it is made, against the most Corral allows, so
    nothing derived from one can overflow, whoever made it: the operator's
    defaults and ceilings, an agent's overrides, a test.
    """

    requests: int = 1000
    timeout_s: float = 60.0
    cpu_s: float = 30.0
    memory_mb: int = 256

    def __post_init__(self) -> None:
        for name, rule in RANGES.items():
            rule.check(name, getattr(self, name), rule.most, "the most Corral allows")

    def override(self, overrides: object, ceilings: Limits) -> Limits:
        """These limits with an agent's ``limits = {...}`` applied; ``LimitError`` says
        what is wrong with it. An agent may ask for anything up to ``ceilings``."""
        if not isinstance(overrides, dict):
            raise LimitError(
                "limits must be a dict of limit names to values, such as {'timeout_s': 120}, "
                f"got {quoted(overrides)}"
            )
        unknown = sorted(quoted(name) for name in overrides if name not in RANGES)
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise LimitError(
                f"unknown limit(s) {', '.join(unknown[:5])}{more}; the limits are "
                f"{', '.join(sorted(RANGES))}"
            )
        for name, value in overrides.items():
            RANGES[name].check(name, value, getattr(ceilings, name), "the operator's ceiling")
        return replace(self, **overrides)


#: The ceilings unless the operator sets others: what an agent may raise its limits to.
CEILINGS = Limits(requests=100_000, timeout_s=900.0, cpu_s=900.0, memory_mb=4096)


class Outcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CPU_LIMIT = "cpu_limit"
    MEMORY_LIMIT = "memory_limit"
    REQUEST_LIMIT = "request_limit"
    KILLED = "killed"


@dataclass
class ExecutionResult:
    """What the sandbox measured and returned for one execution."""

    outcome: Outcome
    result: Any = None
    error: dict[str, str] | None = None
    requests_used: int = 0
    cpu_ms: float = 0.0
    peak_rss_bytes: int = 0
    duration_ms: float = 0.0
    logs: list[tuple[str, str]] = field(default_factory=list)

    def kept_running(self, cpu_ms: float) -> None:
        """The process went on computing for ``cpu_ms`` after reporting this result
        (the agent sent a completion of its own, or left a thread busy): it was stopped,
        and the time is charged here rather than to nobody."""
        self.outcome = Outcome.KILLED
        self.cpu_ms += cpu_ms
        self.error = {
            "type": Outcome.KILLED.value,
            "message": f"the sandboxed process kept running after it reported its result "
            f"({cpu_ms:,.0f} ms of CPU more) and was stopped",
            "traceback": "",
        }

    @property
    def failure_line(self) -> str | None:
        """How the execution failed, in one line; None if it did not."""
        return failure_line(self.outcome.value, self.error)

    @property
    def breached(self) -> bool:
        """True when the process must not serve another execution."""
        return self.outcome not in (Outcome.OK, Outcome.ERROR, Outcome.REQUEST_LIMIT)


def failure_line(outcome: str, error: Mapping[str, str] | None) -> str | None:
    """How an execution failed, in one line, for a log, a table or a task's last error.

    The agent's own exception reads as Python prints it (``ValueError: no``); a limit
    that stopped the execution leads (``memory_limit: MemoryError: ...``). When the
    kernel ended the process, its error's type is the outcome itself: said once.
    """
    if error is None:
        return None
    said = [outcome] if outcome != Outcome.ERROR else []
    if error.get("type") and error["type"] != outcome:
        said.append(error["type"])
    said.append(error.get("message", ""))
    return ": ".join(said)
