"""Signing in and out: with a token pasted into a form, or a one-time link.

See :mod:`corral.server.dashboard.sessions` for what a session is and why.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from corral.errors import DashboardError
from corral.server.dashboard.sessions import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Session,
    SignInCodes,
    csrf_token,
    csrf_valid,
)
from corral.server.dashboard.web import (
    READ,
    Endpoint,
    csrf_refusal,
    field,
    form_of,
    now_ms,
    refusal_page,
    render,
    safe_next,
    services_of,
    signin_secret,
    view,
)


def _secure(request: Request) -> bool:
    """Cookies are marked Secure when the browser reached us over HTTPS."""
    return request.url.scheme == "https"


def _signin_form(
    request: Request,
    *,
    status: int = 200,
    problem: str | None = None,
    target: str | None = None,
) -> HTMLResponse:
    """The form; ``target``: where signing in leads (else ``?next=``, else ``/``)."""
    secret = signin_secret(request) or secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        None,
        status_code=status,
        csrf=csrf_token(secret),
        problem=problem,
        next=safe_next(target or request.query_params.get("next")),
        ended=request.query_params.get("ended") == "1",
        signed_out=request.query_params.get("signed_out") == "1",
    )
    if signin_secret(request) is None:
        response.set_cookie(
            SIGNIN_COOKIE,
            secret,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/signin",
        )
    return response


def _signed_in(response: Response, request: Request, token_text: str) -> Response:
    response.set_cookie(
        SESSION_COOKIE,
        token_text,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


async def signin_page(request: Request) -> Response:
    """The sign-in form."""
    return _signin_form(request)


async def signin(request: Request) -> Response:
    """Sign in with the token posted; back to the form, saying why, if it is not one."""
    try:
        form = await form_of(request)
    except DashboardError as refusal:
        return refusal_page(request, refusal, None)
    if not csrf_valid(signin_secret(request), field(form, CSRF_FIELD)):
        return refusal_page(request, csrf_refusal(), None)
    presented = field(form, "token").strip()
    target = safe_next(field(form, "next"))
    if not presented:
        return _signin_form(request, status=400, problem="Paste a token to sign in.", target=target)
    services = services_of(request)
    token = await services.database.call(services.tokens.verify, presented, now=now_ms(services))
    if token is None:
        return _signin_form(
            request,
            status=401,
            problem="That token is not valid: it is malformed, unknown or revoked. "
            "Make one with: corral tokens create --scope read (or operate).",
            target=target,
        )
    return _signed_in(RedirectResponse(target, status_code=303), request, presented)


def one_time(codes: SignInCodes | None) -> Endpoint:
    """The endpoint of ``/signin/{code}``, redeeming the codes this process holds."""

    async def redeem(request: Request) -> Response:
        """Signed in, then on to the overview. The page moves on by itself (a refresh,
        no script): a cookie set on a link followed from another site is not sent on a
        redirect of that same navigation (SameSite=Strict), but is on a refresh."""
        token_text = codes.redeem(request.path_params["code"]) if codes is not None else None
        if token_text is None:
            return refusal_page(
                request,
                DashboardError(
                    404,
                    "Sign-in link not valid",
                    "This one-time sign-in link was used already, has lapsed, or was made "
                    "by another run of corral dev. Restart corral dev for a new one, or "
                    "sign in with a token (corral tokens create --scope operate).",
                ),
                None,
            )
        response = render(request, "signed_in.html", None)
        response.headers["refresh"] = "0; url=/"
        return _signed_in(response, request, token_text)

    return redeem


@view(READ)
async def signout(request: Request, session: Session) -> Response:
    """Forget the session in this browser (its token stays valid elsewhere)."""
    response = RedirectResponse("/signin?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
