"""Who is signed in to the dashboard, and what proves a form came from its pages.

A browser signs in with an admin API token (``corral tokens create``). The token
itself is the session: it is kept in an HTTP-only, ``SameSite=Strict`` cookie and
checked against the database on every request, as the API checks a bearer token.
So nothing about sessions lives in a server's memory (any server on the database
serves any browser), revoking the token (``corral tokens revoke``) signs out every
browser that uses it at its next request, and the token's scope is what the
browser may do: ``read`` sees everything, ``operate`` also retries, cancels,
replays and re-runs.

Forms carry a CSRF token derived from the session's secret (an HMAC of it), so a
page of another site cannot make a signed-in browser post a form: it can neither
read the cookie nor compute the token. The sign-in form, before there is a
session, is bound the same way to a random value in a cookie of its own.

``corral dev`` and ``make run`` print a one-time sign-in URL (:class:`SignInCodes`):
the process makes a token of scope ``operate`` for its own run (revoked when it
stops) and holds, in memory, a random code that stands for it; opening
``/signin/<code>`` once, within a few minutes, signs the browser in with that token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

from corral.runtime.tokens import Token

#: The cookie holding a signed-in browser's token.
SESSION_COOKIE: Final = "corral_session"
#: The cookie the sign-in form's CSRF token is bound to, before there is a session.
SIGNIN_COOKIE: Final = "corral_signin"
#: The form field every form posts its CSRF token in.
CSRF_FIELD: Final = "csrf"
#: How long a one-time sign-in code stays valid, in seconds.
CODE_TTL_S: Final = 15 * 60
_CSRF_CONTEXT: Final = b"corral dashboard csrf v1"


def csrf_token(secret: str) -> str:
    """The CSRF token of forms made for the holder of ``secret`` (a session's token,
    or the sign-in cookie's value): an HMAC, so it says nothing about the secret."""
    return hmac.new(secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_valid(secret: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token of ``secret`` (compared in constant time)."""
    if not secret or not presented:
        return False
    return hmac.compare_digest(csrf_token(secret), presented)


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its token (as listings show it) and its forms' CSRF token."""

    token: Token
    csrf: str

    def allows(self, scope: str) -> bool:
        return self.token.allows(scope)


class SignInCodes:
    """One-time sign-in codes held by the serving process (``corral dev``): each
    stands for a token's text, is redeemed once, and lapses after ``ttl_s``."""

    def __init__(self, ttl_s: float = CODE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._codes: dict[str, tuple[str, float]] = {}

    def issue(self, token_text: str) -> str:
        """A new code for ``token_text``; ``/signin/<code>`` signs a browser in with it."""
        code = secrets.token_urlsafe(24)
        self._codes[code] = (token_text, time.monotonic() + self.ttl_s)
        return code

    def redeem(self, code: str) -> str | None:
        """The token a code stands for, once: None if it is unknown, used or lapsed."""
        found = self._codes.pop(code, None)
        if found is None:
            return None
        token_text, until = found
        return token_text if time.monotonic() < until else None
