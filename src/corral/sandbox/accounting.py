"""What the kernel says of a sandboxed process: the CPU and peak memory it used, and
how it ended.

Read from outside (the process's CPU clock, ``/proc``, the zygote's wait status), never
from what the sandboxed code reports, so agent code cannot under-report its use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass

from corral.sandbox.limits import Limits, Outcome


@dataclass(frozen=True)
class ExitInfo:
    status: int
    cpu_s: float
    maxrss_bytes: int

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None


def process_cpu_s(pid: int) -> float:
    """The process's CPU time, all threads, from the kernel's per-process CPU clock."""
    return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)


def reset_peak_rss(pid: int) -> None:
    """Reset the process's VmHWM to its current resident set (``clear_refs`` 5), so the
    peak read after an execution is that execution's own, not the process's lifetime's.
    Where the kernel refuses, the peak stays the lifetime's (docs/sandbox.md)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "wb") as refs:
        refs.write(b"5")


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def outcome_of_death(info: ExitInfo) -> Outcome:
    if info.signal == signal.SIGXCPU:
        return Outcome.CPU_LIMIT
    return Outcome.KILLED


def out_of_memory(limits: Limits) -> str:
    return f"the execution ran out of memory (limit {limits.memory_mb} MiB)"


def death_message(outcome: Outcome, info: ExitInfo, limits: Limits) -> str:
    return {
        Outcome.TIMEOUT: "the execution ran past its wall-clock timeout and was stopped",
        Outcome.CPU_LIMIT: "the execution used its whole CPU budget and was stopped",
        Outcome.MEMORY_LIMIT: out_of_memory(limits),
    }.get(outcome, f"the sandboxed process died (wait status {info.status})")
