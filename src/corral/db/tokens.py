"""The admin API tokens' statements. Both backends run the same SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.db.raw import Database

TOKEN_COLUMNS = ("id", "name", "scope", "secret_hash", "created_at", "last_used_at", "revoked_at")
_SELECT = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens"

Row = Sequence[Any]


class TokenDatabase:
    """Named operations on the tokens table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def insert(self, token_id: str, name: str, scope: str, secret_hash: str, *, now: int) -> None:
        self.database.write(
            "INSERT INTO tokens (id, name, scope, secret_hash, created_at) "
            "VALUES (:id, :name, :scope, :hash, :now)",
            {"id": token_id, "name": name, "scope": scope, "hash": secret_hash, "now": now},
        )

    def token(self, token_id: str) -> Row | None:
        row: Row | None = self.database.fetch_one(f"{_SELECT} WHERE id = :id", {"id": token_id})
        return row

    def tokens(self) -> list[Row]:
        """Every token, revoked ones too, newest first."""
        return self.database.fetch_all(f"{_SELECT} ORDER BY created_at DESC, id DESC")

    def tokens_page(self, *, before: tuple[int, str] | None, limit: int) -> list[Row]:
        """Tokens newest first, revoked ones too; ``before`` (created_at, id): the page
        after that one."""
        keyed = "WHERE (created_at, id) < (:b_at, :b_id) " if before is not None else ""
        b_at, b_id = before if before is not None else (None, None)
        return self.database.fetch_all(
            f"{_SELECT} {keyed}ORDER BY created_at DESC, id DESC LIMIT :limit",
            {"b_at": b_at, "b_id": b_id, "limit": limit},
        )

    def revoke(self, token_id: str, *, now: int) -> int:
        """Revoke a live token; how many were (0: none such, or revoked already)."""
        return self.database.write(
            "UPDATE tokens SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL",
            {"id": token_id, "now": now},
        )

    def used(self, token_id: str, *, now: int) -> None:
        self.database.write(
            "UPDATE tokens SET last_used_at = :now WHERE id = :id", {"id": token_id, "now": now}
        )
