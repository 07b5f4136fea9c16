"""The one database every part of Corral lives in: engines, schema, migrations."""

from corral.db.engine import DEFAULT_URL, DatabaseURLError, create_engine, resolve_url
from corral.db.migrate import SchemaOutOfDate, ensure_schema, upgrade

__all__ = [
    "DEFAULT_URL",
    "DatabaseURLError",
    "SchemaOutOfDate",
    "create_engine",
    "ensure_schema",
    "resolve_url",
    "upgrade",
]
