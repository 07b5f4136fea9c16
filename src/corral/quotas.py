"""What one instance may keep: its store's size, its pending tasks, callbacks, webhooks.

Limits (:mod:`corral.sandbox.limits`) bound one execution; quotas bound what an
instance accumulates across all of them, which nothing else does: an execution
within its limits may still write 1 MiB per request to its store, or queue a task
per request, and the next one may do it again. A write over a quota is refused
with :class:`QuotaExceeded`, and nothing of it is written.

The defaults are far above what an honest agent keeps, and still bound what a
hostile one can pile up (docs/store.md § Quotas says why each is where it is).
The operator sets them in the ``[quotas]`` section of the configuration
(:mod:`corral.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from corral.errors import QuotaConfigError, QuotaExceeded

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The largest quota accepted: sums of sizes stay far inside the databases' 64-bit integers.
MAX_QUOTA = 2**62


@dataclass(frozen=True)
class Quotas:
    """Per-instance quotas; one instance of this is the whole runtime's setting."""

    #: Bytes of keys (UTF-8) plus encoded values in the instance's store.
    store_bytes: int = 64 * MiB
    #: Keys in the instance's store.
    store_keys: int = 100_000
    #: Tasks queued or scheduled (one-shot, keyed or recurring) and not yet running.
    pending_tasks: int = 1_000
    #: Callbacks the instance has made and not deleted.
    callbacks: int = 1_000
    #: Webhooks the instance has made and not deleted (a plugin's tick endpoint,
    #: the platform's, is not counted).
    webhooks: int = 100
    #: Activities the instance has created (SPEC §1.4; updating one, by id or by
    #: source, adds none). Each holds at most 32 KiB (``MAX_ACTIVITY_BYTES``).
    activities: int = 100_000

    def __post_init__(self) -> None:
        for quota in fields(self):
            value = getattr(self, quota.name)
            if type(value) is not int or not 1 <= value <= MAX_QUOTA:
                raise QuotaConfigError(
                    f"the {quota.name} quota must be a whole number from 1 to {MAX_QUOTA:,}, "
                    f"got {value!r}"
                )


# -- what the agent is told ------------------------------------------------------------


def check_store(quotas: Quotas, *, before: tuple[int, int], after: tuple[int, int]) -> None:
    """Refuse a store write that takes its scope from ``before`` to ``after`` (bytes,
    keys) when it grows either past its quota; one that shrinks or keeps it passes,
    even over a quota lowered since, so that an agent can always make room."""
    (bytes_before, keys_before), (bytes_after, keys_after) = before, after
    if (bytes_before < bytes_after and bytes_after > quotas.store_bytes) or (
        keys_before < keys_after and keys_after > quotas.store_keys
    ):
        raise store_exceeded(quotas, bytes_after=bytes_after, keys_after=keys_after)


def store_exceeded(quotas: Quotas, *, bytes_after: int, keys_after: int) -> QuotaExceeded:
    """The error for a store write that would leave ``bytes_after`` and ``keys_after``."""
    over = []
    if bytes_after > quotas.store_bytes:
        limit = f"its {quotas.store_bytes:,}-byte quota{_sized(quotas.store_bytes)}"
        over.append((f"{bytes_after:,} bytes", limit))
    if keys_after > quotas.store_keys:
        over.append((f"{keys_after:,} keys", f"its {quotas.store_keys:,}-key quota"))
    held = " and ".join(use for use, _ in over)
    limits = " and ".join(limit for _, limit in over)
    return QuotaExceeded(
        f"this instance's store would hold {held}, over {limits}: delete keys or store less "
        "(nothing was written)"
    )


def tasks_exceeded(quotas: Quotas, pending: int) -> QuotaExceeded:
    """The error for a new pending task when the instance already has ``pending``."""
    return QuotaExceeded(
        f"this instance has {pending:,} pending tasks (queued or scheduled, not yet running), "
        f"and its quota is {quotas.pending_tasks:,}: cancel some or let them run before "
        "adding more (nothing was queued)"
    )


def callbacks_exceeded(quotas: Quotas, made: int) -> QuotaExceeded:
    """The error for a new callback when the instance already has ``made``."""
    return QuotaExceeded(
        f"this instance has {made:,} callbacks, and its quota is {quotas.callbacks:,}: "
        "delete those it no longer needs (delete_callback) before making more "
        "(nothing was made)"
    )


def webhooks_exceeded(quotas: Quotas, made: int) -> QuotaExceeded:
    """The error for a new webhook when the instance already has ``made``."""
    return QuotaExceeded(
        f"this instance has {made:,} webhooks, and its quota is {quotas.webhooks:,}: "
        "delete those it no longer needs (delete_webhook) before making more "
        "(nothing was made)"
    )


def _sized(n: int) -> str:
    """`` (64 MiB)`` beside a byte count of a KiB or more, in the largest unit that fits."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            amount = n / size
            return f" ({amount:.0f} {unit})" if amount == int(amount) else f" ({amount:.1f} {unit})"
    return ""
