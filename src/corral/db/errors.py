"""Which database errors are an outage, to be waited out, and which are not.

A worker that stops on every failed call leaves its work to a human; one that
retries everything spins forever on a wrong schema or a revoked password. The
line is drawn here, once, for every caller: an error that says the database
cannot be reached *now* (no connection, a connection lost or closed by a
shutdown, no free connection slot, SQLite's write lock held past the busy
timeout) becomes :class:`DatabaseUnavailable`, raised from the original; any
other error (no such table or column, permission denied, failed
authentication, no such database or role, a constraint) stays what it was.

The reasons are written for whoever catches the error, an agent included: they
name the kind of trouble, never the host, port or user the URL holds (those
stay in the original error, the ``__cause__``, for the host's own logs).
"""

from __future__ import annotations

import sqlite3

import psycopg
import sqlalchemy as sa

from corral.errors import DatabaseUnavailable

# SQLite's primary result codes for "another connection holds the lock".
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6

_SHUTTING_DOWN = "PostgreSQL is shutting down, starting up or restarting"
_NO_SLOTS = "PostgreSQL has no free connection slot"
_NO_CONNECTION = "no connection to PostgreSQL (refused, reset or lost)"

#: SQLSTATEs of a server that cannot serve now but will: admin, crash and startup
#: shutdowns (57P01-57P03), too many connections (53300). Class 08 (connection
#: exceptions) is matched as a class.
_TRANSIENT_STATES = {
    "57P01": _SHUTTING_DOWN,
    "57P02": _SHUTTING_DOWN,
    "57P03": _SHUTTING_DOWN,
    "53300": _NO_SLOTS,
}

#: A connection attempt the server refused has no SQLSTATE in libpq's message, only
#: the server's text; these refusals are temporary (in the server's English).
_TEMPORARY_REFUSALS = {
    "too many clients": _NO_SLOTS,
    "remaining connection slots are reserved": _NO_SLOTS,
    "the database system is starting up": _SHUTTING_DOWN,
    "the database system is shutting down": _SHUTTING_DOWN,
    "the database system is in recovery mode": _SHUTTING_DOWN,
    "the database system is not yet accepting connections": _SHUTTING_DOWN,
    "the database system is not accepting connections": _SHUTTING_DOWN,
}


#: What a database call may raise: the drivers' errors, SQLAlchemy's (which wraps
#: them where it opened the connection), and an outage.
DATABASE_ERRORS = (sqlite3.Error, psycopg.Error, sa.exc.SQLAlchemyError, DatabaseUnavailable)


def unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """The outage ``exc`` reports, as a ``DatabaseUnavailable`` caused by it; None when
    ``exc`` is not one (waiting would not help)."""
    reason = _transient(exc)
    if reason is None:
        return None
    error = DatabaseUnavailable(
        f"the database is unavailable: {reason}; the call may not have taken effect, retry later"
    )
    error.__cause__ = exc
    return error


def raise_if_unavailable(exc: BaseException) -> None:
    """Raise ``DatabaseUnavailable`` from ``exc`` if it reports an outage; else return,
    for the caller to re-raise ``exc`` itself."""
    error = unavailable(exc)
    if error is not None:
        raise error from exc


def gist(exc: BaseException) -> str:
    """A driver's error in one line for a log (libpq's run over several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _transient(exc: BaseException) -> str | None:
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig  # SQLAlchemy's wrapper, from a connection its pool opened
    if isinstance(exc, sqlite3.OperationalError):
        if exc.sqlite_errorcode & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return "another process has held the SQLite database's write lock past the busy timeout"
        return None
    if not isinstance(exc, psycopg.OperationalError):
        return None
    state = exc.sqlstate
    if state is not None:
        if state.startswith("08") and state != "08P01":  # a protocol violation is a bug
            return _NO_CONNECTION
        return _TRANSIENT_STATES.get(state)
    if isinstance(exc, psycopg.errors.PipelineAborted):  # the statement before it failed
        return None
    message = str(exc)
    for refusal, reason in _TEMPORARY_REFUSALS.items():
        if refusal in message:
            return reason
    # The server answered and refused (authentication, no such role or database), or
    # libpq has no password to give: waiting would not change that.
    if "FATAL:" in message or "password" in message or "authentication" in message:
        return None
    return _NO_CONNECTION  # refused, reset, timed out, closed: the network or the server
