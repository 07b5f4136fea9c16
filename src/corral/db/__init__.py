"""The one database every part of Corral lives in: engines, schema, migrations."""

from corral.db.engine import DEFAULT_URL, create_engine
from corral.db.migrate import ensure_schema, upgrade

__all__ = [
    "DEFAULT_URL",
    "create_engine",
    "ensure_schema",
    "upgrade",
]
