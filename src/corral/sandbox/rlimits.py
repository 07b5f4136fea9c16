"""Resource limits for one sandbox process: CPU seconds, address space, files, no output files.

Memory is bounded with RLIMIT_AS, not RLIMIT_DATA. DATA fits a heap budget more closely
(it ignores file mappings), but the kernel stops enforcing it when booted with
``ignore_rlimit_data`` and logs a warning the first time it bites; AS is always enforced,
and it also bounds threads, since every thread stack is a mapping (the fork filter allows
threads, and uid 0 is exempt from RLIMIT_NPROC). The cost is that AS counts everything
the child inherits from the zygote, so the limit is that size plus the budget: use
:func:`address_space_for` in the zygote. A limit below the current size is legal; only
new mappings fail, and Python turns the failure into MemoryError.

RLIMIT_CPU is per process and counts from fork: a warm process reused for many
executions accumulates CPU time across them, so for a warm process it is a lifetime cap
and per-execution CPU time is the host's to measure and enforce.
"""

from __future__ import annotations

import os
import resource
import threading
from dataclasses import dataclass

#: Stack glibc gives a thread when RLIMIT_STACK is unlimited and none is set.
_DEFAULT_THREAD_STACK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """The limits :meth:`apply` sets, soft and hard alike unless noted.

    - CPU: soft ``cpu_seconds`` delivers SIGXCPU, which Python does not handle, so the
      process dies with it; the hard limit one second later is SIGKILL, in case the
      agent blocked or handled SIGXCPU.
    - AS: ``address_space`` bytes, or unlimited if None (see the module notes).
    - NOFILE: ``open_files`` descriptors; inherited ones beyond it stay open.
    - CORE 0: a crash leaves no core file with the agent's memory in it.
    - FSIZE 0: no file can grow. Landlock already forbids opening files for writing;
      this also covers inherited descriptors. Give the process pipes or /dev/null as
      stdout and stderr: writes to a regular file fail with EFBIG (Python ignores the
      accompanying SIGXFSZ).
    """

    cpu_seconds: int
    address_space: int | None = None
    open_files: int = 64

    def __post_init__(self) -> None:
        if self.cpu_seconds < 1:
            raise ValueError(f"cpu_seconds must be at least 1, not {self.cpu_seconds}")
        if self.address_space is not None and self.address_space <= 0:
            raise ValueError(f"address_space must be positive, not {self.address_space}")
        if self.open_files < 3:
            raise ValueError(f"open_files must leave room for stdio, not {self.open_files}")

    def apply(self) -> None:
        """Set the limits on the calling process (after fork, before the fork filter,
        which forbids changing them again)."""
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1))
        if self.address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (self.address_space, self.address_space))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def address_space_for(budget: int, threads: int = 4) -> int:
    """An RLIMIT_AS that leaves a child forked from this process ``budget`` bytes to
    allocate and room for ``threads`` thread stacks: current VmSize + stacks + budget.

    Call it in the zygote, after its imports. The probe's minimum for a 4-thread pool was
    48 MB against a 29 MB zygote. A thread's malloc arena (64 MB reserved each) does not
    fit a tight limit; glibc then serves that thread from the main arena, which works.
    """
    if budget < 0 or threads < 0:
        raise ValueError("budget and threads must not be negative")
    return _vm_size() + threads * _thread_stack_size() + budget


def _vm_size() -> int:
    with open("/proc/self/statm", "rb") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _thread_stack_size() -> int:
    size = threading.stack_size()
    if size == 0:
        soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
        size = _DEFAULT_THREAD_STACK if soft == resource.RLIM_INFINITY else soft
    return size + os.sysconf("SC_PAGE_SIZE")  # and its guard page
