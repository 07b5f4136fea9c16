"""The dashboard's plumbing: templates, forms, who may see or do what, and every
refusal answered as a page a person can read.

Each page is a coroutine ``(request, session) -> Response`` wrapped by
:func:`view`, which signs the browser in or sends it to ``/signin``, checks the
CSRF token of every POST (403 without a valid one), checks the token's scope
(403 for an action a ``read`` token may not take), and turns what the runtime
refuses into a page: an unknown id is a 404, bad input a 400, an unreachable
database a 503. Nothing here is an HTTP 500 but a bug.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from corral.errors import ApiError, CorralError, DashboardError, DatabaseUnavailable, NotFound
from corral.runtime.services import Services
from corral.server.api import pages
from corral.server.dashboard.sessions import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Session,
    csrf_token,
    csrf_valid,
)

log = logging.getLogger("corral.dashboard")

READ: Final = "read"
OPERATE: Final = "operate"

#: The cookie carrying what an action did to the page it returns to.
NOTICE_COOKIE: Final = "corral_notice"

#: The largest form body taken (a bulk action's ids fit many times over).
MAX_FORM_BYTES: Final = 64 * 1024

#: Sent with every page: no framing (clickjacking), scripts and styles from this
#: server only, forms posting only here, and no URL leaking to other sites.
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

View = Callable[[Request, Session], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class _SignInNeeded(Exception):
    def __init__(self, reason: str | None) -> None:
        super().__init__(reason)
        self.reason = reason


def now_ms(services: Services) -> int:
    """Now, in ms, by the runtime's clock (a test's may be fake): what a retry is due
    at and a TTL is counted from, as the worker sees it."""
    return math.floor(services.clock() * 1000)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- templates ----------------------------------------------------------------------------


def utc_time(ms: int | None) -> str:
    """A time as people read it, in UTC (the same for every viewer and server)."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _span(ms: float | None) -> str:
    """A length of time, short: 850 ms, 12.3 s, 4 min, 1 h 5 min, 2 d 3 h."""
    if ms is None:
        return "—"
    ms = abs(ms)
    if ms < 1000:
        return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes = int(ms // 60_000)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _ago(ms: int | None, now: int) -> str:
    if ms is None:
        return "—"
    if ms > now:
        return f"in {_span(ms - now)}"
    return f"{_span(now - ms)} ago"


def _size(count: int | None) -> str:
    if count is None:
        return "—"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def _pretty(value: Any) -> str:
    """A JSON value (tagged JSON for types JSON lacks), indented for reading."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("corral.server.dashboard", "templates"),
    autoescape=jinja2.select_autoescape(["html", "svg"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(
    when=utc_time, iso=iso_time, span=_span, size=_size, pretty=_pretty, compact=_compact
)
ENVIRONMENT.globals.update(ago=_ago)


def render(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page: ``template`` with ``context``, what every page knows, and the headers."""
    notice = request.cookies.get(NOTICE_COOKIE)
    html = ENVIRONMENT.get_template(template).render(
        notice=unquote(notice) if notice else None,
        request=request,
        session=session,
        csrf=session.csrf if session is not None else context.pop("csrf", ""),
        can_operate=session is not None and session.allows(OPERATE),
        now=now_ms(services_of(request)),
        path=request.url.path,
        link=lambda **changes: link(request, **changes),
        **context,
    )
    response = HTMLResponse(
        html, status_code=status_code, headers={**SECURITY_HEADERS, **(headers or {})}
    )
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path="/")  # shown once
    return response


def link(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None: removed); the cursor
    goes whenever a filter changes, since it belongs to the old list."""
    params = dict(request.query_params)
    if any(name != "cursor" for name in changes):
        params.pop("cursor", None)
    for name, value in changes.items():
        if value is None or value == "":
            params.pop(name, None)
        else:
            params[name] = str(value)
    query = urlencode(params)
    return f"{request.url.path}?{query}" if query else request.url.path


def refusal_page(
    request: Request, refusal: DashboardError, session: Session | None
) -> HTMLResponse:
    return render(
        request,
        "error.html",
        session,
        status_code=refusal.status,
        code=refusal.status,
        title=refusal.title,
        message=refusal.message,
    )


# -- forms --------------------------------------------------------------------------------


async def form_of(request: Request) -> dict[str, list[str]]:
    """The posted form (``application/x-www-form-urlencoded``), each field's values in
    order; read once and kept on the request. 413 over ``MAX_FORM_BYTES``, 415 for any
    other encoding."""
    cached: dict[str, list[str]] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise DashboardError(
            415, "Unsupported form", f"forms are posted URL-encoded, not as {kind[:60]!r}"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise DashboardError(
                413, "Form too large", f"a form takes at most {MAX_FORM_BYTES} bytes"
            )
    fields: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise DashboardError(400, "Malformed form", "the form is not UTF-8") from None
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    request.state.form = fields
    return fields


def field(form: Mapping[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default


def csrf_refusal() -> DashboardError:
    return DashboardError(
        403,
        "Form refused: no valid CSRF token",
        "This form did not carry the CSRF token of your session, so it may have been sent "
        "by another site on your behalf, and nothing was done. Reload the page you came "
        "from and submit it again.",
    )


# -- who is signed in ---------------------------------------------------------------------


async def session_of(request: Request) -> Session | None:
    """The signed-in browser's session, or None (no cookie, or a token that is
    malformed, unknown or revoked)."""
    cached: Session | None = getattr(request.state, "session", None)
    if cached is not None:
        return cached
    presented = request.cookies.get(SESSION_COOKIE)
    if not presented:
        return None
    services = services_of(request)
    token = await services.database.call(services.tokens.verify, presented, now=now_ms(services))
    if token is None:
        return None
    session = Session(token, csrf_token(presented))
    request.state.session = session
    return session


def signin_secret(request: Request) -> str | None:
    """The value the sign-in form's CSRF token is bound to (its own cookie)."""
    return request.cookies.get(SIGNIN_COOKIE)


def _next_of(request: Request) -> str:
    """Where to come back to after signing in: this page, if it is a GET."""
    if request.method != "GET":
        return "/"
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this server, else ``/``: a sign-in link cannot
    send the browser to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def view(scope: str = READ) -> Callable[[View], Endpoint]:
    """A page or action that needs a session whose token allows ``scope``."""

    def wrap(page: View) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            session: Session | None = None
            try:
                session = await session_of(request)
                if session is None:
                    ended = request.cookies.get(SESSION_COOKIE) is not None
                    raise _SignInNeeded("ended" if ended else None)
                if request.method == "POST":
                    form = await form_of(request)
                    if not csrf_valid(request.cookies.get(SESSION_COOKIE), field(form, CSRF_FIELD)):
                        raise csrf_refusal()
                if not session.allows(scope):
                    raise DashboardError(
                        403,
                        "Not allowed with this token",
                        f"This needs a token of scope {scope!r} or above; you signed in with "
                        f"{session.token.name or session.token.id!r}, of scope "
                        f"{session.token.scope!r}. Sign in with another token "
                        f"(corral tokens create --scope {scope}).",
                    )
                return await page(request, session)
            except _SignInNeeded as needed:
                query = {"next": _next_of(request)}
                if needed.reason:
                    query["ended"] = "1"
                return RedirectResponse(f"/signin?{urlencode(query)}", status_code=303)
            except DashboardError as refusal:
                return refusal_page(request, refusal, session)
            except DatabaseUnavailable as exc:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
                unavailable = DashboardError(
                    503,
                    "Database unavailable",
                    "The server cannot reach its database right now; nothing was changed. "
                    "Try again in a moment.",
                )
                return refusal_page(request, unavailable, session)
            except NotFound as exc:
                return refusal_page(request, DashboardError(404, "Not found", str(exc)), session)
            except (CorralError, ValueError) as exc:
                return refusal_page(request, DashboardError(400, "Refused", str(exc)), session)

        endpoint.__name__ = page.__name__
        endpoint.__doc__ = page.__doc__
        return endpoint

    return wrap


def redirect(to: str, *, notice: str | None = None) -> RedirectResponse:
    """After an action: back to a page (303, so a reload does not post again), with a
    line saying what was done. The line travels in a short-lived cookie the next page
    shows once, not in the URL: a link cannot make a page say something it did not."""
    response = RedirectResponse(to, status_code=303)
    if notice:
        response.set_cookie(
            NOTICE_COOKIE,
            quote(notice[:500]),
            max_age=60,
            httponly=True,
            samesite="strict",
            path="/",
        )
    return response


def query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; 400 page otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DashboardError(
            400, "Bad parameter", f"{name} must be a whole number, got {raw[:40]!r}"
        ) from None
    if not low <= value <= high:
        raise DashboardError(
            400, "Bad parameter", f"{name} must be from {low} to {high}, got {value}"
        )
    return value


def query_text(request: Request, name: str, *, max_length: int = 200) -> str | None:
    """A text query parameter (None when absent or empty); 400 page when too long."""
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_length:
        raise DashboardError(400, "Bad parameter", f"{name} takes at most {max_length} characters")
    return raw.strip()


# -- lists ---------------------------------------------------------------------------------

#: Rows a list page shows unless asked (``?limit=``, 1-100, as the API's lists).
PAGE_SIZE: Final = 50
MAX_PAGE: Final = 100

K = TypeVar("K")
R = TypeVar("R")


def cursor_of(request: Request, decode: Callable[[str | None], K]) -> K:
    """The position ``?cursor=`` holds, decoded as the API decodes its cursors; a page
    link the dashboard did not make is a 400 page."""
    try:
        return decode(query_text(request, "cursor", max_length=400))
    except ApiError:
        raise DashboardError(
            400,
            "Bad page link",
            "This page link holds a position that is not one of this list's: start again "
            "from the first page.",
        ) from None


@dataclass(frozen=True)
class Paged(Generic[R]):
    """One page of a list and the cursor of the next (None: this is the last)."""

    rows: list[R]
    next_cursor: str | None


def paged(rows: Sequence[R], limit: int, key: Callable[[R], Sequence[int | str]]) -> Paged[R]:
    """The page of ``rows`` read ``limit + 1`` at a time: the extra row says there is a
    next page, which starts after the last row shown (so nothing is ever cut off)."""
    kept = list(rows[:limit])
    more = len(rows) > limit and bool(kept)
    return Paged(kept, pages.encode(key(kept[-1])) if more else None)


def page_size(request: Request) -> int:
    return query_int(request, "limit", PAGE_SIZE, low=1, high=MAX_PAGE)


def query_moment(request: Request, name: str) -> int | None:
    """A time in ``?name=`` (ISO 8601; without a zone, UTC, as the pages show times)
    in ms since the epoch; a 400 page if it is not one."""
    raw = query_text(request, name, max_length=40)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise DashboardError(
            400,
            "Bad parameter",
            f"{name} must be a date and time such as 2026-01-31T14:05 (UTC), got {raw!r}",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp() * 1000)


def query_choice(request: Request, name: str, choices: Sequence[str]) -> str | None:
    raw = query_text(request, name)
    if raw is not None and raw not in choices:
        raise DashboardError(
            400, "Bad parameter", f"{name} is one of {', '.join(choices)}, got {raw[:40]!r}"
        )
    return raw


def value_type(value: Any) -> str:
    """The type a stored value has, read from its tagged JSON (``corral.tagged_json``):
    ``{"$tuple": [...]}`` is a tuple; plain JSON is named as Python names it."""
    if isinstance(value, dict):
        tags = [str(key) for key in value if str(key).startswith("$")]
        if len(tags) == 1:  # a tag, perhaps with its zone beside it
            return tags[0][1:]
    if value is None:
        return "None"
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
    return names.get(type(value), type(value).__name__)


ENVIRONMENT.filters.update(value_type=value_type)
