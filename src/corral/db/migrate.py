"""Create and upgrade the schema with Alembic, safely from many processes at once.

Migrations run inside one write transaction that also holds a lock (SQLite's
write lock via ``BEGIN IMMEDIATE``; a transaction-scoped advisory lock on
PostgreSQL), so two processes starting together never both try to create the
same table: the second waits, then finds the schema current.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from corral.db.engine import write_options
from corral.errors import SchemaOutOfDate

_MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed number; it only has to be the same in every Corral process.
_ADVISORY_LOCK_MIGRATE = 0x636F7272_0001


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "Corral ships at least one migration"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; returns (before, after)."""
    config = _config()
    head = head_revision()
    with engine.connect().execution_options(**write_options(engine)) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_MIGRATE})
        before = MigrationContext.configure(conn).get_current_revision()
        if before != head:
            _refuse_unknown(before)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    return before, head


def _refuse_unknown(revision: str | None) -> None:
    if revision is None:
        return
    script = ScriptDirectory.from_config(_config())
    try:
        script.get_revision(revision)
    except Exception as exc:
        raise SchemaOutOfDate(
            f"the database is at schema revision {revision!r}, which this Corral does not "
            "know: it was migrated by a newer version; upgrade Corral to use it"
        ) from exc


def ensure_schema(engine: sa.Engine) -> None:
    """Upgrade the schema if it is behind; cheap when it is already current."""
    if current_revision(engine) != head_revision():
        upgrade(engine)
