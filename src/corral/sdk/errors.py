"""Exceptions an agent can see, shared by the sandbox and the host.

They live in the SDK because agent code catches them; the host raises the same
types so a failure reads the same on both sides of the RPC channel.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base class of every Corral-specific error."""


class RequestLimitExceeded(CorralError):
    """The execution used its whole request budget; what it did before stays done."""


class RateLimited(CorralError):
    """Outbound requests are over the instance's rate and the wait ran past the timeout."""


class AgentDefinitionError(CorralError):
    """The agent's code cannot be loaded: no Agent class, several, or a syntax error."""


class UnknownMethod(CorralError):
    """The execution named a method the agent's current version does not have."""


# Exceptions that cross the RPC channel keep their type; anything else arrives
# as a RuntimeError carrying the original type's name in its message.
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
        AgentDefinitionError,
        UnknownMethod,
    )
}
