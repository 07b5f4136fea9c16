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


class FetchError(CorralError, ConnectionError):
    """A fetch got no complete response: no connection, a broken one, or too many redirects.

    A ``ConnectionError`` too, so code written for other HTTP clients catches it.
    An HTTP error status is not one of these: it is a response like any other.
    """


class FetchTimeout(FetchError, TimeoutError):
    """A fetch ran past its timeout (``timeout_s``, or what was left of the execution)."""


class ResponseTooLarge(FetchError):
    """The response body is over the size a fetch may bring into the sandbox."""


class DatabaseUnavailable(CorralError, ConnectionError):
    """The platform's database cannot be reached now (a network cut, a restart, another
    writer holding SQLite's lock): the call may not have taken effect; try again later.

    A ``ConnectionError`` too, so code that retries on connection errors catches it.
    The worker that runs the agent waits the outage out and carries on.
    """


class QuotaExceeded(CorralError):
    """A write would take the instance over one of its quotas (its store's bytes or
    keys, its pending tasks, its callbacks); nothing of it was written."""


class AgentDefinitionError(CorralError):
    """The agent's code cannot be loaded: no Agent class, several, or a syntax error."""


class UnknownMethod(CorralError):
    """The execution named a method the agent's current version does not have."""


class ResultTooLarge(CorralError):
    """A handler returned a value over the size an execution record keeps."""

    @classmethod
    def of(cls, size: int, limit: int) -> ResultTooLarge:
        """The error for an encoded return value of ``size`` bytes, over ``limit``: one
        wording, whether the sandbox refuses it or the host does."""
        return cls(
            f"the return value is {size:,} bytes encoded, over the {limit:,}-byte limit of a "
            "result: keep large data in self.store and return its key"
        )


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
