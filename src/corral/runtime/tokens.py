"""Admin API tokens: made once, shown once, stored as a hash, checked in constant time.

A token reads ``corral_<id>_<secret>``. The id finds its row; the secret is compared,
as its SHA-256, with ``hmac.compare_digest``, so how long a comparison takes says
nothing about how much of a guess was right. The secret has 256 random bits, so a
plain hash is enough (no password stretching: nobody chose it). Revoking a token
keeps its row, so ``corral tokens ls`` still shows who had access and when.

Scopes are ordered: ``read`` (GET), ``operate`` (retry, cancel, replay, install,
uninstall, deploy), ``admin`` (tokens); a token allows its scope and those below it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from corral.db.raw import Database
from corral.db.tokens import Row, TokenDatabase
from corral.errors import UnknownToken

#: Scopes from least to most: each allows what those before it do.
SCOPES: Final = ("read", "operate", "admin")
PREFIX: Final = "corral_"
#: A token's last use is written at most this often (ms): a busy script must not turn
#: every read into a write.
_USE_EVERY_MS: Final = 60_000
_FORM = re.compile(r"corral_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME_MAX: Final = 200


@dataclass(frozen=True)
class Token:
    """A token as listings show it: never its secret."""

    id: str
    name: str
    scope: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None

    def allows(self, scope: str) -> bool:
        """Whether this token may do what ``scope`` allows."""
        return self.revoked_at is None and SCOPES.index(self.scope) >= SCOPES.index(scope)


class Tokens:
    """Make, list, revoke and check admin API tokens."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._db = TokenDatabase(database)

    def create(self, scope: str, name: str, *, now: int) -> tuple[Token, str]:
        """A new token and its text, which is shown this once and stored only as a hash."""
        if scope not in SCOPES:
            raise ValueError(f"a scope is one of {', '.join(SCOPES)}, got {scope!r:.40}")
        if len(name) > _NAME_MAX:
            raise ValueError(f"a token's name is at most {_NAME_MAX} characters")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        self._db.insert(token_id, name, scope, _hash(secret), now=now)
        return Token(token_id, name, scope, now, None, None), f"{PREFIX}{token_id}_{secret}"

    def tokens(self) -> list[Token]:
        return [_token(row) for row in self._db.tokens()]

    def tokens_page(self, *, before: tuple[int, str] | None = None, limit: int) -> list[Token]:
        """Tokens newest first, revoked ones too; ``before`` (created_at, id): the page
        after that one."""
        return [_token(row) for row in self._db.tokens_page(before=before, limit=limit)]

    def revoke(self, token_id: str, *, now: int) -> Token:
        """Revoke the token: from now on it is refused. ``UnknownToken`` if there is none;
        revoking a revoked token changes nothing."""
        self._db.revoke(token_id, now=now)
        row = self._db.token(token_id)
        if row is None:
            raise UnknownToken(f"there is no token {token_id!r} (see corral tokens ls)")
        return _token(row)

    def verify(self, presented: str, *, now: int) -> Token | None:
        """The live token ``presented`` is, or None (malformed, unknown, wrong, revoked)."""
        match = _FORM.fullmatch(presented)
        if match is None:
            return None
        row = self._db.token(match[1])
        if row is None:
            return None
        if not hmac.compare_digest(str(row[3]), _hash(match[2])):
            return None
        token = _token(row)
        if token.revoked_at is not None:
            return None
        if token.last_used_at is None or now - token.last_used_at >= _USE_EVERY_MS:
            self._db.used(token.id, now=now)
        return token


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(row: Row) -> Token:
    return Token(str(row[0]), str(row[1]), str(row[2]), int(row[4]), row[5], row[6])
