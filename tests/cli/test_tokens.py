"""``corral tokens``: a token is printed once, listings never show a secret, revoking
one makes the API refuse it."""

from __future__ import annotations

import json

from corral.config import RuntimeConfig
from corral.runtime.services import Services
from tests.cli.invoke import corral


def test_create_prints_the_token_once_and_only_its_hash_is_stored(db: str) -> None:
    code, out, err = corral("--db", db, "tokens", "create", "--scope", "operate", "--name", "ci")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("corral_")
    assert "shown this once" in err
    assert "Authorization: Bearer" in err
    services = Services(RuntimeConfig(database_url=db))
    found = services.tokens.verify(token, now=1)
    assert found is not None
    assert (found.name, found.scope) == ("ci", "operate")
    secret = token.rsplit("_", 1)[1]
    stored = services.database.fetch_all("SELECT * FROM tokens")
    assert secret not in repr(stored)


def test_create_as_json_gives_the_token_with_its_listing(db: str) -> None:
    code, out, err = corral("--db", db, "tokens", "create", "--scope", "read", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["token"].startswith(f"corral_{made['id']}_")
    assert (made["scope"], made["name"], made["revoked_at"]) == ("read", "", None)


def test_ls_shows_every_token_and_never_a_secret(db: str) -> None:
    texts = [
        corral("--db", db, "tokens", "create", "--scope", scope, "--name", f"for-{scope}")[
            1
        ].strip()
        for scope in ("read", "admin")
    ]
    for args in (("tokens", "ls"), ("tokens", "ls", "--json")):
        code, out, err = corral("--db", db, *args)
        assert code == 0, err
        assert "for-read" in out
        assert "for-admin" in out
        for text in texts:
            assert text not in out
            assert text.rsplit("_", 1)[1] not in out
    listed = json.loads(corral("--db", db, "tokens", "ls", "--json")[1])
    assert [t["name"] for t in listed] == ["for-admin", "for-read"]  # newest first
    assert all(
        set(t) == {"id", "name", "scope", "created_at", "last_used_at", "revoked_at"}
        for t in listed
    )


def test_revoke_refuses_the_token_from_then_on_and_ls_says_when(db: str) -> None:
    made = json.loads(corral("--db", db, "tokens", "create", "--scope", "read", "--json")[1])
    code, out, err = corral("--db", db, "tokens", "revoke", made["id"])
    assert code == 0, err
    assert out.strip() == f"token {made['id']} (read) revoked"
    services = Services(RuntimeConfig(database_url=db))
    assert services.tokens.verify(made["token"], now=1) is None
    (listed,) = json.loads(corral("--db", db, "tokens", "ls", "--json")[1])
    assert listed["revoked_at"] is not None
    # Revoking again changes nothing and is no error.
    assert corral("--db", db, "tokens", "revoke", made["id"])[0] == 0


def test_revoking_an_unknown_id_says_so(db: str) -> None:
    code, _out, err = corral("--db", db, "tokens", "revoke", "0123456789ab")
    assert code == 1
    assert "there is no token '0123456789ab' (see corral tokens ls)" in err


def test_a_scope_that_is_none_of_the_three_is_refused(db: str) -> None:
    code, _, err = corral("--db", db, "tokens", "create", "--scope", "root")
    assert code == 2
    assert "'root' is not one of 'read', 'operate', 'admin'" in err
