"""Which errors keep their type across the RPC channel between host and sandbox.

The classes live in :mod:`corral.errors` (the whole tree is drawn there); agent
code imports the ones it may catch from ``corral`` or ``corral.sdk``. This module
is the wire's half: the host sends an error's name, the sandbox raises the class
of that name, so a failure reads the same on both sides.
"""

from __future__ import annotations

from corral.errors import (
    AgentDefinitionError,
    DatabaseUnavailable,
    FetchError,
    FetchTimeout,
    QuotaExceeded,
    RateLimited,
    RequestLimitExceeded,
    ResponseTooLarge,
    ResultTooLarge,
    UnknownMethod,
)

__all__ = ["WIRE_EXCEPTIONS", "from_wire", "wire_name"]


# Exceptions that cross the RPC channel keep their type (or the nearest one listed
# here); anything else arrives as a RuntimeError naming the original type.
WIRE_EXCEPTIONS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        TypeError,
        ValueError,
        KeyError,
        PermissionError,
        TimeoutError,
        LookupError,
        RuntimeError,
        NotImplementedError,
        RequestLimitExceeded,
        RateLimited,
        FetchError,
        FetchTimeout,
        ResponseTooLarge,
        DatabaseUnavailable,
        QuotaExceeded,
        AgentDefinitionError,
        UnknownMethod,
        ResultTooLarge,
    )
}


def wire_name(exc: BaseException) -> str:
    """The name an exception crosses the channel under: its own, or its nearest listed base."""
    return next((c.__name__ for c in type(exc).__mro__ if c.__name__ in WIRE_EXCEPTIONS), "")


def from_wire(name: str, message: str) -> BaseException:
    """The exception the agent sees for an error the host reported."""
    exc_type = WIRE_EXCEPTIONS.get(name)
    if exc_type is None:
        return RuntimeError(f"{name or 'error'}: {message}")
    return exc_type(message)
