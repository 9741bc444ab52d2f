"""Rendering and page plumbing shared by the UI pages and the link pages.

- Jinja2 with autoescaping on for every template: a value from an incident's context is text.
- Every HTML answer carries a strict Content-Security-Policy (scripts and styles only from this
  origin, no inline script, framing only by this origin), ``nosniff`` and a referrer policy.
- Pages authenticate with Airflow's own ``get_user`` (the ``_token`` cookie, or a bearer token).
  Without a valid session a browser's navigation (``Accept`` names ``text/html``) is sent to
  Airflow's login with ``next`` back to the page; any other caller gets a 401.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from airflow_escalation.core.states import state_table
from airflow_escalation.service import auth

if TYPE_CHECKING:
    import jinja2

    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: the service's mount point in the API server (the plugin's url_prefix)
MOUNT = "/escalation"
#: the Escalations nav entry's ``url_route`` (the plugin's external view)
NAV_URL_ROUTE = "escalations"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ]
)


def security_headers(referrer: str = "same-origin") -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": referrer,
        "Cache-Control": "no-store",
    }


@lru_cache(maxsize=1)
def environment() -> "jinja2.Environment":
    import jinja2

    from airflow_escalation.core.timefmt import format_time

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its name
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = format_time  # the one time format (core/timefmt.py), as the pages' script writes it
    return env


# ---------------------------------------------------------------------------------- paths


def service_root(request: Request) -> str:
    """Where the service app is mounted, as the browser sees it (``/escalation``, or ``""``)."""
    return str(request.scope.get("root_path", "") or "").rstrip("/")


def airflow_root(request: Request) -> str:
    """The Airflow UI's root path (``""`` unless Airflow runs under a base path)."""
    root = service_root(request)
    return root[: -len(MOUNT)] if root.endswith(MOUNT) else ""


def login_url(request: Request, next_url: Optional[str] = None) -> str:
    """Airflow's login (``/api/v2/auth/login``, which asks the auth manager), back to ``next``."""
    url = f"{airflow_root(request)}/api/v2/auth/login"
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


_STATE_TABLE = json.dumps(state_table(), separators=(",", ":"))


def page_context(request: Request, **extra: Any) -> dict[str, Any]:
    root = service_root(request)
    return {
        "service_root": root,
        "static": f"{root}/ui/static",
        "ui": f"{root}/ui",
        "api": f"{root}/api/v1",
        "airflow_root": airflow_root(request),
        "login": login_url(request),
        # the Escalations page inside Airflow's UI (the nav entry's iframe follows the path)
        "nav_url": f"{airflow_root(request)}/plugin/{NAV_URL_ROUTE}",
        # the state sets and which action each state allows, for the UI script (core.states)
        "states": _STATE_TABLE,
        **extra,
    }


def render(
    request: Request, template: str, status_code: int = 200, *, referrer: str = "same-origin", **context: Any
) -> HTMLResponse:
    html = environment().get_template(template).render(**page_context(request, **context))
    # a stored value that is not valid UTF-8 (a lone surrogate) shows as "?", never a 500
    return HTMLResponse(html.encode("utf-8", "replace"), status_code=status_code, headers=security_headers(referrer))


# ---------------------------------------------------------------------------------- errors


class PageRedirect(Exception):
    """Answer a page request with a 303 redirect (to the login page)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class PageError(Exception):
    """Answer a page request with an HTML error page."""

    def __init__(
        self, status_code: int, title: str, message: str = "", *, referrer: str = "same-origin", **context: Any
    ) -> None:
        super().__init__(title)
        self.status_code, self.title, self.message = status_code, title, message
        self.referrer, self.context = referrer, context


async def page_redirect(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PageRedirect):
        return RedirectResponse(exc.url, status_code=303, headers=security_headers("no-referrer"))
    assert isinstance(exc, PageError)
    return error_page(request, exc)


def error_page(request: Request, exc: PageError) -> HTMLResponse:
    return render(
        request,
        "error.html",
        exc.status_code,
        referrer=exc.referrer,
        title=exc.title,
        message=exc.message,
        status=exc.status_code,
        **exc.context,
    )


# ---------------------------------------------------------------------------------- users


def browser_navigation(request: Request) -> bool:
    """Is this a browser opening a page (its ``Accept`` names ``text/html``), which a login
    redirect serves, rather than a script or client, which wants a status it can act on?"""
    return "text/html" in (request.headers.get("accept") or "").lower()


async def page_user(request: Request) -> "BaseUser":
    """The Airflow user of a page request. Without a valid session: a browser's navigation goes
    to the login page (303), any other request gets a 401 page."""
    credentials = await auth.bearer_scheme(request)
    try:
        return await auth.get_user(request, None, credentials)
    except HTTPException as exc:
        if exc.status_code in (401, 403):  # no session, expired or invalid token
            if browser_navigation(request):
                raise PageRedirect(login_url(request, str(request.url))) from None
            raise PageError(
                401, "Not authenticated", "Log in to Airflow to see escalations.", referrer="no-referrer"
            ) from None
        raise


async def page_reader(request: Request) -> "BaseUser":
    """A user allowed to read escalations (the REST API's read permission), else a 403 page."""
    user = await page_user(request)
    try:
        await auth.require_read(user)
    except HTTPException as exc:
        raise PageError(
            exc.status_code, "You may not see escalations", "Your Airflow role lacks the permission to view plugins."
        ) from None
    return user
