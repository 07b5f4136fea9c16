"""The activity model's statements: priorities, activities, notes, and who hears of them.

Both backends run the same SQL here. Rows come back in the order of
``ACTIVITY_COLUMNS`` and ``NOTE_COLUMNS``; ``corral.plot.rows`` makes them into
``Activity`` and ``Note`` values and owns the rules.

Every write to a priority tree's activities first takes the tree's turn
(:meth:`ActivityDatabase.lock_tree`): a source is unique within a tree, and
"create, or update the activity that has this source" is a read then a write,
which two executions at once would otherwise both see as a create.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.db.quota import count_before_insert
from corral.db.raw import Database
from corral.db.registry import ACTIVE, SUSPENDED

ACTIVITY_COLUMNS = (
    "id",
    "root",
    "priority",
    "type",
    "title",
    "source",
    "starts",
    "ends",
    "done",
    "meta",
    "author",
    "size",
    "created_at",
    "updated_at",
)
NOTE_COLUMNS = ("id", "activity_id", "key", "content", "author", "created_at", "updated_at")

_SELECT_ACTIVITY = f"SELECT {', '.join(ACTIVITY_COLUMNS)} FROM activities"
_SELECT_NOTE = f"SELECT {', '.join(NOTE_COLUMNS)} FROM notes"
#: An activity of priority ``:priority`` or of a priority under it (``:under`` is
#: ``priority + '/'``, ``:under_len`` its length); ``root`` lets the index narrow it.
_IN_VIEW = "root = :root AND (priority = :priority OR substr(priority, 1, :under_len) = :under)"

Row = Sequence[Any]

#: Values one lookup statement asks for at once (``ActivityDatabase._in``).
_CHUNK = 100

# Any fixed number shared by every Corral process, "plot": "the turn of a priority tree".
_TREE_LOCK_CLASS = 0x706C6F74


def view_params(priority: str) -> dict[str, Any]:
    """``_IN_VIEW``'s parameters for an instance of ``priority``."""
    under = priority + "/"
    return {
        "root": priority.split("/")[0],
        "priority": priority,
        "under": under,
        "under_len": len(under),
    }


class ActivityDatabase:
    """Named operations on the priorities, activities and notes tables."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- priorities ---------------------------------------------------------------------

    def add_priorities(self, names: Sequence[str], *, now: int) -> None:
        """The priorities that do not exist yet (one that does is left as it is)."""
        with self.database.transaction(write=True) as cur:
            for name in names:
                self.database.execute(
                    cur,
                    "INSERT INTO priorities (name, created_at) VALUES (:name, :now) "
                    "ON CONFLICT (name) DO NOTHING",
                    {"name": name, "now": now},
                )

    def priority_exists(self, name: str) -> bool:
        return (
            self.database.fetch_one("SELECT 1 FROM priorities WHERE name = :name", {"name": name})
            is not None
        )

    def priorities(self, *, after: str | None = None, limit: int | None = None) -> list[Row]:
        """Each priority's name, creation time, live instances and activities, by name;
        ``after``: from the name after it; ``limit``: at most so many."""
        keyed = "WHERE p.name > :after " if after is not None else ""
        limited = "LIMIT :limit" if limit is not None else ""
        return self.database.fetch_all(
            "SELECT p.name, p.created_at, "
            "(SELECT count(*) FROM instances i WHERE i.priority = p.name "
            f"AND i.status IN ('{ACTIVE}', '{SUSPENDED}')), "
            "(SELECT count(*) FROM activities a WHERE a.priority = p.name) "
            f"FROM priorities p {keyed}ORDER BY p.name {limited}",
            {"after": after, "limit": limit},
        )

    # -- activities ---------------------------------------------------------------------

    def lock_tree(self, root: str) -> None:
        """Inside the caller's write transaction, wait for the tree's turn (see above)."""
        with self.database.transaction(write=True) as cur:
            self.database.take_turn(cur, _TREE_LOCK_CLASS, root)

    def count_authored(self, instance: str, limit: int) -> int:
        """Activities the instance created, inside the caller's write transaction before
        it adds some (``count_before_insert``)."""
        with self.database.transaction(write=True) as cur:
            return count_before_insert(
                self.database,
                cur,
                "activities",
                "author = :instance",
                {"instance": instance},
                limit,
            )

    def by_ids(self, ids: Sequence[str]) -> list[Row]:
        return self._in(f"{_SELECT_ACTIVITY} WHERE id IN ({{names}})", ids, {})

    def by_sources(self, root: str, sources: Sequence[str]) -> list[Row]:
        return self._in(
            f"{_SELECT_ACTIVITY} WHERE root = :root AND source IN ({{names}})",
            sources,
            {"root": root},
        )

    def _in(self, sql: str, values: Sequence[Any], params: dict[str, Any]) -> list[Row]:
        """``sql``'s rows for every value, asked ``_CHUNK`` values at a time (the last
        chunk padded with its last value), so that a batch of any size sends one
        statement text, which the driver and ``Database.sql`` cache once."""
        names = ", ".join(f":v{n}" for n in range(_CHUNK))
        statement = sql.format(names=names)
        rows: list[Row] = []
        for start in range(0, len(values), _CHUNK):
            chunk = list(values[start : start + _CHUNK])
            chunk += chunk[-1:] * (_CHUNK - len(chunk))
            found = self.database.fetch_all(
                statement, {**params, **{f"v{n}": v for n, v in enumerate(chunk)}}
            )
            rows.extend(found)
        return rows

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """New activities, each a dict of ``ACTIVITY_COLUMNS``."""
        self._many(
            f"INSERT INTO activities ({', '.join(ACTIVITY_COLUMNS)}) "
            f"VALUES ({', '.join(':' + column for column in ACTIVITY_COLUMNS)})",
            rows,
        )

    def update(self, rows: Sequence[dict[str, Any]]) -> None:
        """Activities changed: each dict has every column; ``id`` and ``root`` stay."""
        changed = [c for c in ACTIVITY_COLUMNS if c not in ("id", "root", "created_at")]
        self._many(
            f"UPDATE activities SET {', '.join(f'{c} = :{c}' for c in changed)} WHERE id = :id",
            rows,
        )

    def _many(self, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        """``sql`` once for each of ``rows``, inside the caller's write transaction
        (``Database.execute_many``, which waits for a batch's answers)."""
        if not rows:
            return
        with self.database.transaction(write=True) as cur:
            self.database.execute_many(cur, sql, rows)

    def find(
        self,
        priority: str | None,
        *,
        type_: str | None,
        done: bool | None,
        source_prefix: str | None,
        since: int | None,
        limit: int,
        before: tuple[int, str] | None = None,
    ) -> list[Row]:
        """Activities of ``priority`` and the priorities under it (every one, if None),
        most recently changed first; ``before`` (updated_at, id): the page after it."""
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if priority is not None:
            where.append(_IN_VIEW)
            params.update(view_params(priority))
        if type_ is not None:
            where.append("type = :type")
            params["type"] = type_
        if done is not None:
            where.append("done = :done")
            params["done"] = done
        if source_prefix is not None:
            where.append("substr(source, 1, :prefix_len) = :prefix")
            params.update(prefix=source_prefix, prefix_len=len(source_prefix))
        if since is not None:
            where.append("updated_at >= :since")
            params["since"] = since
        if before is not None:
            # ``updated_at <= :b_at`` on its own too: PostgreSQL starts the index scan
            # there, where the OR alone made it walk every newer activity first (a page
            # 40,000 deep took 48 ms, and more the deeper it was).
            where.append(
                "updated_at <= :b_at "
                "AND (updated_at < :b_at OR (updated_at = :b_at AND id < :b_id))"
            )
            params.update(b_at=before[0], b_id=before[1])
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.database.fetch_all(
            f"{_SELECT_ACTIVITY}{clause} ORDER BY updated_at DESC, id DESC LIMIT :limit", params
        )

    # -- notes --------------------------------------------------------------------------

    def notes_of(self, activity_ids: Sequence[str]) -> list[Row]:
        """The notes of these activities, each activity's in the order they were added."""
        return self._in(
            f"{_SELECT_NOTE} WHERE activity_id IN ({{names}}) ORDER BY activity_id, n",
            activity_ids,
            {},
        )

    def insert_notes(self, rows: Sequence[dict[str, Any]]) -> None:
        """New notes, each a dict of ``NOTE_COLUMNS``, in the order given."""
        self._many(
            f"INSERT INTO notes ({', '.join(NOTE_COLUMNS)}) "
            f"VALUES ({', '.join(':' + column for column in NOTE_COLUMNS)})",
            rows,
        )

    def update_note(self, note_id: str, content: str, *, now: int) -> None:
        self.database.write(
            "UPDATE notes SET content = :content, updated_at = :now WHERE id = :id",
            {"id": note_id, "content": content, "now": now},
        )

    def note_ids_taken(self, ids: Sequence[str]) -> list[Row]:
        """(id, activity_id) of the notes that already have one of these ids."""
        return self._in("SELECT id, activity_id FROM notes WHERE id IN ({names})", ids, {})

    # -- who hears of a change ----------------------------------------------------------

    def listeners(self, priorities: Sequence[str], author: str | None) -> list[Row]:
        """(instance, agent, current version) of each instance, active or suspended, of one
        of ``priorities`` (an activity's priority and those above it), but ``author``."""
        names = {f"p{n}": value for n, value in enumerate(priorities)}
        return self.database.fetch_all(
            "SELECT i.id, i.agent, a.current_version FROM instances i JOIN agents a "
            f"ON a.name = i.agent WHERE i.priority IN ({', '.join(':' + k for k in names)}) "
            f"AND i.status IN ('{ACTIVE}', '{SUSPENDED}') AND i.id <> :author ORDER BY i.id",
            {**names, "author": author or ""},
        )
