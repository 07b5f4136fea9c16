"""Every error Corral raises on purpose, host and agent side alike, in one tree.

::

    CorralError                      caught by `except CorralError`; its message is for people
    ├── ConfigError (ValueError)         a setting is not one Corral accepts
    │   ├── DatabaseURLError                 the database URL names nothing Corral can use
    │   └── QuotaConfigError                 a CORRAL_QUOTAS_* value
    ├── NotFound (LookupError)           a name or id that names nothing
    │   ├── UnknownAgent                     no agent of that name is deployed
    │   ├── UnknownInstance                  no instance has that id
    │   ├── UnknownTask                      no task has that id
    │   ├── UnknownCallback                  no callback has that token
    │   ├── UnknownWebhook                   no webhook has that id, token or URL
    │   ├── UnknownDelivery                  no delivery has that id
    │   ├── UnknownActivity                  no activity has that id
    │   ├── UnknownPriority                  no priority has that name
    │   ├── UnknownToken                     no admin API token has that id
    │   └── UnknownExecution                 no execution record has that id
    ├── AgentCodeError (ValueError)      an agent's code cannot be deployed or run as written
    │   ├── AgentDefinitionError   [agent]   no Agent class, several, or a syntax error
    │   ├── DeclarationError                 its class, methods or tick are malformed
    │   └── NetworkPatternError              a `network` entry that is no pattern
    ├── LimitError (ValueError)      a limit out of its range: an agent's, or the operator's
    ├── ExecutionError               what an execution runs into, raised in agent code
    │   ├── RequestLimitExceeded   [agent]   the request budget is spent
    │   ├── RateLimited            [agent]   outbound requests over the instance's rate
    │   ├── QuotaExceeded          [agent]   a write would go over a quota
    │   ├── UnknownMethod          [agent]   the agent has no such method
    │   ├── ResultTooLarge         [agent]   a return value over the size a record keeps
    │   ├── NeedsWorker (RuntimeError)       `corral exec` was asked to queue a task
    │   ├── NeedsServer (RuntimeError)       `corral exec` was asked to make a webhook
    │   └── FetchError (ConnectionError) [agent]  a fetch got no complete response
    │       ├── FetchTimeout (TimeoutError) [agent]
    │       └── ResponseTooLarge   [agent]
    ├── DatabaseError                the database cannot serve Corral
    │   ├── DatabaseUnavailable (ConnectionError) [agent]  unreachable now; retry later
    │   └── SchemaOutOfDate (RuntimeError)  migrated by a newer Corral
    ├── SandboxError                 the sandbox could not be set up or used as asked
    │   ├── SandboxUnavailable               a sandbox layer is missing on this machine
    │   └── ProtocolError                    a frame on the RPC channel broke the protocol
    ├── HandlerReturnError (ValueError)  a sync webhook's return value is no HTTP response
    ├── ListenError (OSError)        the server cannot listen where it was asked to
    ├── ApiError                     the admin API refuses a request (its status, code, message)
    ├── DashboardError               the dashboard refuses a request (its status, title, message)
    ├── BodyTooLarge                 a request body went past the server's bound as it was read
    ├── WebhookError (ValueError)    a webhook delivery that cannot be taken as it is
    │   ├── WebhookBodyError       [agent]   a JSON content type over a body that does not parse
    │   └── WebhookVerificationError [agent] a signature missing, wrong or stale
    ├── UnknownOperation (PermissionError)  the sandbox asked for an operation there is none of
    └── DecodeLimitExceeded (ValueError)    encoded bytes would cost too much to decode

``[agent]``: agent code can catch it (``from corral import QuotaExceeded``); it
keeps its type across the RPC channel (``corral.sdk.errors`` maps the wire).

The builtin base in parentheses is a mixin that stays: ``except LookupError``,
``except ValueError``, ``except ConnectionError`` written for other libraries
(or before this tree) still catch what they did.

The sandboxed SDK imports this module, so it imports nothing: no host code, no
third-party package.
"""

from __future__ import annotations

from pathlib import Path


class CorralError(Exception):
    """Base class of every error Corral raises on purpose.

    Its message is written for whoever reads it (an operator at the CLI, an agent's
    author): what is wrong and, where there is something to do, what to do. The CLI
    prints it as one line; anything else that escapes is a bug.
    """


# -- configuration ----------------------------------------------------------------------


class ConfigError(CorralError, ValueError):
    """A setting (an option, a ``CORRAL_*`` variable, a ``corral.toml`` value) is not one
    Corral accepts; the message names the setting and what it accepts."""


class DatabaseURLError(ConfigError):
    """The database URL names something Corral cannot use."""


class QuotaConfigError(ConfigError):
    """A quota's setting is not a whole number in range, or names no quota."""


# -- names that name nothing ------------------------------------------------------------


class NotFound(CorralError, LookupError):
    """A name or id given to Corral names nothing (never made, or gone)."""


class UnknownAgent(NotFound):
    """No agent of that name has been deployed."""


class UnknownInstance(NotFound):
    """No instance has that id."""


class UnknownTask(NotFound):
    """No task has that id (it ran, was cancelled, or never existed)."""


class UnknownCallback(NotFound):
    """The token names no callback of this instance (deleted, or never made)."""


class UnknownWebhook(NotFound):
    """No webhook has that id, token or URL (never made, or gone past retention)."""


class UnknownDelivery(NotFound):
    """No delivery has that id (never received, or gone past retention)."""


class UnknownActivity(NotFound):
    """No activity has that id."""


class UnknownPriority(NotFound):
    """No priority has that name (an install or ``corral priorities create`` makes one)."""


class UnknownToken(NotFound):
    """No admin API token has that id."""


class UnknownExecution(NotFound):
    """No execution record has that id (never recorded, or gone past retention)."""


# -- agent code -------------------------------------------------------------------------


class AgentCodeError(CorralError, ValueError):
    """The code cannot be deployed or run: it does not load, or declares what Corral
    does not accept (limits, network patterns, a tick)."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        #: The line of the agent's code the error points at, when it points at one.
        self.line = line

    def where(self, path: Path) -> str:
        """Where the error is, as editors and terminals link it: ``path:line`` or ``path``."""
        return f"{path}:{self.line}" if self.line is not None else str(path)


class AgentDefinitionError(AgentCodeError):
    """The agent's code cannot be loaded: no Agent class, several, or a syntax error."""


class DeclarationError(AgentCodeError):
    """A description that no agent class gives: its class, methods or tick are malformed."""


class NetworkPatternError(AgentCodeError):
    """A ``network`` entry is not a pattern Corral understands."""


class LimitError(CorralError, ValueError):
    """A limit's value is not one Corral accepts: one an agent declares in ``limits``,
    or an operator's default over its ceiling; the message names the limit and its range.
    """


# -- executions -------------------------------------------------------------------------


class ExecutionError(CorralError):
    """What an execution runs into; raised in the agent's code, which may catch it."""


class RequestLimitExceeded(ExecutionError):
    """The execution used its whole request budget; what it did before stays done."""


class RateLimited(ExecutionError):
    """Outbound requests are over the instance's rate and the wait ran past the timeout."""


class QuotaExceeded(ExecutionError):
    """A write would take the instance over one of its quotas (its store's bytes or
    keys, its pending tasks, its callbacks); nothing of it was written."""


class UnknownMethod(ExecutionError):
    """The execution named a method the agent's current version does not have."""


class ResultTooLarge(ExecutionError):
    """A handler returned a value over the size an execution record keeps."""

    @classmethod
    def of(cls, size: int, limit: int) -> ResultTooLarge:
        """The error for an encoded return value of ``size`` bytes, over ``limit``: one
        wording, whether the sandbox refuses it or the host does."""
        return cls(
            f"the return value is {size:,} bytes encoded, over the {limit:,}-byte limit of a "
            "result: keep large data in self.store and return its key"
        )


class NeedsWorker(ExecutionError, RuntimeError):
    """``corral exec`` was asked to queue a task, which only a worker would run; the
    agent sees a ``RuntimeError`` that says to run it under ``corral dev``."""


class NeedsServer(ExecutionError, RuntimeError):
    """``corral exec`` was asked to make a webhook, which only a server would receive;
    the agent sees a ``RuntimeError`` that says to run it under ``corral dev``."""


class FetchError(ExecutionError, ConnectionError):
    """A fetch got no complete response: no connection, a broken one, or too many redirects.

    A ``ConnectionError`` too, so code written for other HTTP clients catches it.
    An HTTP error status is not one of these: it is a response like any other.
    """


class FetchTimeout(FetchError, TimeoutError):
    """A fetch ran past its timeout (``timeout_s``, or what was left of the execution)."""


class ResponseTooLarge(FetchError):
    """The response body is over the size a fetch may bring into the sandbox."""


# -- the database -----------------------------------------------------------------------


class DatabaseError(CorralError):
    """The database cannot serve Corral: unreachable, or in a state this Corral cannot use."""


class DatabaseUnavailable(DatabaseError, ConnectionError):
    """The platform's database cannot be reached now (a network cut, a restart, another
    writer holding SQLite's lock): the call may not have taken effect; try again later.

    A ``ConnectionError`` too, so code that retries on connection errors catches it.
    The worker that runs the agent waits the outage out and carries on.
    """


class SchemaOutOfDate(DatabaseError, RuntimeError):
    """The database was migrated by a newer Corral than this one."""


# -- the sandbox ------------------------------------------------------------------------


class SandboxError(CorralError):
    """The sandbox could not be set up as asked, or was used the wrong way.

    Kernel calls that fail raise plain :class:`OSError` (with ``errno`` set, so callers
    can tell ``EPERM`` from ``ENOSYS``); this is for the cases a caller must act on.
    """


class SandboxUnavailable(SandboxError):
    """One or more sandbox layers are missing on this machine.

    The message names each missing layer, why it is missing and what to do about it,
    so ``corral doctor`` and the refusal to start can print it as is.
    """

    def __init__(self, message: str, layers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        #: Names of the missing layers, as reported by ``corral.sandbox.support.probe_support``.
        self.layers = layers


class ProtocolError(SandboxError):
    """A frame broke the protocol: too large, not msgpack, or not a known message."""


# -- the boundary between host and agent ------------------------------------------------


class HandlerReturnError(CorralError, ValueError):
    """A sync handler returned a value that cannot become an HTTP response; the message
    says why, for the instance's log (the sender sees only a generic 500)."""


class ListenError(CorralError, OSError):
    """The server cannot listen where it was asked to (a port taken, an unknown host)."""


class ApiError(CorralError):
    """The admin API refuses a request: the HTTP status, the short code and the message
    of its answer (``{"error": {"code", "message"}}``), and headers to send with it."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class DashboardError(CorralError):
    """The dashboard refuses a request: the HTTP status, and the title and message of
    the page it answers with (the message says what to do)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class BodyTooLarge(CorralError):
    """A request body went past the server's bound while the app read it (the server
    answers 413; FastAPI wraps it, reading a body, in a 400 whose cause it is)."""


class WebhookError(CorralError, ValueError):
    """A webhook delivery that cannot be taken as it is; the message says why, for the
    sender (the server's 4xx) or for the agent's own ``verify``."""


class WebhookBodyError(WebhookError):
    """A body whose Content-Type says JSON does not parse: the server answers 400."""


class WebhookVerificationError(WebhookError):
    """A delivery's signature is missing, wrong or stale: the server answers 401."""


class UnknownOperation(CorralError, PermissionError):
    """The sandbox asked for an operation that does not exist."""


class DecodeLimitExceeded(CorralError, ValueError):
    """The bytes would cost more to decode than a value may: see ``corral.codec.decode``."""
