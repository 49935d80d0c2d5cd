"""The dashboard's login outside dev mode: an API key kept in a cookie.

``POST /login`` checks the key against the engine's API keys and stores it in an
HttpOnly, SameSite=Strict cookie; the API's key check accepts that cookie for pages and
for ``/v1`` calls the page makes. A request that changes something and is authenticated
only by the cookie must also come from the dashboard's own origin (its ``Origin``
header), so another site cannot forge it even in a browser that ignores SameSite.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "stepstream_key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_key(request: web.Request) -> str | None:
    """The API key from the dashboard's cookie, if any."""
    return request.cookies.get(COOKIE) or None


def same_origin(request: web.Request) -> bool:
    """Whether a state-changing request comes from a page of this server: its ``Origin``
    (or, without one, its ``Referer``) names this host. Neither: refused."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme in ("http", "https")


def refuse_cookie(request: web.Request, accepted: Any) -> web.Response | None:
    """The answer refusing a request authenticated by the login cookie, or None to serve
    it: the key must still be ``accepted(key)``, and a change must come from this
    server's own page (SameSite=Strict covers the rest)."""
    if not accepted(cookie_key(request) or ""):
        if not is_page(request):
            return web.json_response({"error": "the dashboard's saved API key is no longer "
                                               "accepted; log in again at /login",
                                      "status": 401}, status=401)
        return login_page(request, "Your saved API key is no longer accepted; log in "
                                   "again.", status=401)
    if request.method not in SAFE_METHODS and not same_origin(request):
        return web.json_response({"error": "a change made with the dashboard's login must "
                                           "come from its own page (Origin header of this "
                                           "server)", "status": 403}, status=403)
    return None


def is_page(request: web.Request) -> bool:
    """A browser asking for a page (answered with the login page when no key is given)
    rather than an API client (answered with a JSON 401): not an API path, and HTML
    accepted."""
    path = request.path
    if (path.startswith("/v1/") or path.startswith("/e/") or path == "/health"
            or path.startswith("/ui/") or path == "/metrics"):
        return False
    return "text/html" in request.headers.get("Accept", "")


def _safe_next(value: Any) -> str:
    text = str(value or "/")
    # Only a path on this server: never //host or a scheme, so login is no open redirect.
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return text


def login_page(request: web.Request, message: str | None = None,
               status: int = 401, nxt: str | None = None) -> web.Response:
    """The login form (status 401 when shown in place of a page); ``nxt`` is where to
    go after it (default: the page asked for)."""
    from engine.api.dashboard.routes import render_bare

    if nxt is None:
        nxt = request.path_qs if request.path not in ("/login", "/logout") else (
            request.query.get("next", "/"))
    return render_bare("login.html", status, message=message, next=_safe_next(nxt))


async def login_get(request: web.Request) -> web.Response:
    """``GET /login``: the form (200)."""
    return login_page(request, status=200)


async def login_post(request: web.Request, keys: frozenset[str],
                     check: Any) -> web.StreamResponse:
    """``POST /login`` (form ``key``, ``next``): sets the cookie and goes to ``next``;
    403 with the form again if the key is not one of ``keys``."""
    if request.headers.get("Origin") and not same_origin(request):
        return login_page(request, "This form must be sent from this server's own page.",
                          status=403)
    try:
        form = await request.post()
    except ValueError as exc:
        # A multipart body without its boundary, bad url-encoding: the sender's fault,
        # found by the fault campaign's HTTP fuzzing (it answered 500 before).
        return login_page(request, f"The form could not be read: {exc}", status=400)
    key = str(form.get("key") or "").strip()
    if not key or not check(key, keys):
        return login_page(request, "API key not accepted (not one of the engine's "
                                   "STEPSTREAM_API_KEYS).", status=403,
                          nxt=_safe_next(form.get("next")))
    response = web.Response(status=303, headers={"Location": _safe_next(form.get("next"))})
    response.set_cookie(COOKIE, key, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
    return response


async def logout(request: web.Request) -> web.Response:
    """``POST /logout``: forget the cookie."""
    response = web.json_response({"status": "logged out"})
    response.del_cookie(COOKIE, path="/")
    return response
