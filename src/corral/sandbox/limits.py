"""Per-execution limits (SPEC §1.6) and how an execution ended."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Limits:
    requests: int = 1000
    timeout_s: float = 60.0
    cpu_s: float = 30.0
    memory_mb: int = 256

    def override(self, overrides: dict[str, Any]) -> Limits:
        """These limits with an agent's ``limits = {...}`` applied, each checked."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown limit(s) {', '.join(unknown)}; the limits are {', '.join(sorted(known))}"
            )
        for name, value in overrides.items():
            if type(value) not in (int, float) or value <= 0:
                raise ValueError(f"limit {name} must be a positive number, got {value!r}")
        return replace(self, **overrides)


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
    def breached(self) -> bool:
        """True when the process must not serve another execution."""
        return self.outcome not in (Outcome.OK, Outcome.ERROR, Outcome.REQUEST_LIMIT)
