"""Pin a worker process, and the sandboxes it forks, to one CPU.

A tool call from inside the sandbox is a round trip between two processes. When
they sit on different CPUs each hop wakes the other CPU, which on a virtual
machine costs tens of microseconds; on the same CPU the kernel switches directly.
Measured on the project's 2-core machines (``bench/sandbox.py``), pinning made
sequential store calls from inside the sandbox 2-3.5x faster when the unpinned
processes landed on different CPUs (and made no difference when the scheduler
had already put them on one). ``corral worker --cpu N`` pins a worker this way;
run one worker per CPU, each with its own N, and its zygote and sandboxed
processes inherit the pin, so CPU-heavy agents still spread over every CPU.
A worker started without ``--cpu`` is not pinned.
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
