"""Pin a worker process, and the sandboxes it forks, to one CPU.

A tool call from inside the sandbox is a round trip between two processes. When
they sit on different CPUs each hop wakes the other CPU, which on a virtual
machine costs tens of microseconds; on the same CPU the kernel switches directly.
Measured on the project's 2-core machines (``bench/sandbox.py``), pinning made
sequential store calls from inside the sandbox 2-3x faster. So a worker runs one
process per CPU, each pinned, and its zygote and sandboxed processes inherit the
pin: CPU-heavy agents still spread over every CPU, one worker's worth each.
"""

from __future__ import annotations

import os


def available_cpus() -> list[int]:
    """The CPUs this process may run on, ascending."""
    return sorted(os.sched_getaffinity(0))


def pin_to_cpu(index: int) -> int:
    """Pin this process to the ``index``-th CPU it may use (wrapping round); returns it.

    Call it before starting the zygote: processes forked later inherit the pin.
    """
    cpus = available_cpus()
    cpu = cpus[index % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return cpu
