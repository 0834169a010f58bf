"""The UI inside `runstore serve` (login, one user's folders) and the standalone local UI.

Server: the Gate middleware in runstore/server/app.py leaves ``/`` and ``/ui/...`` to this
module, which authenticates by session cookie (runstore/ui/sessions.py); ``/api/v1`` keeps
its bearer tokens. Local: ``create_local_app`` serves the store read-only, with no login, and
answers only requests addressed to a loopback host name (a web page elsewhere cannot reach it
through DNS rebinding).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from runstore.server.auth import AuthError
from runstore.server.timing import ServerTiming
from runstore.ui import routes, sessions
from runstore.ui.data import UIData
from runstore.ui.local import LocalData
from runstore.ui.serverdata import ServerData


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never //evil.example or https://...) as a redirect target."""
    if not target:
        return "/ui/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/ui") or "\\" in target:
        return "/ui/"
    return target


class CsrfCookie:
    """ASGI middleware on the UI's paths: the request's CSRF token in ``request.state.csrf``
    (the browser's ``runstore_csrf`` cookie, or a new token), and the cookie set on the
    response when it was new. (Plain ASGI rather than @app.middleware("http"): that wraps each
    request in a task group and memory streams, a few ms of every page.)"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not routes.is_ui_path(scope["path"]):
            return await self.app(scope, receive, send)
        cookie = Request(scope).cookies.get(sessions.CSRF_COOKIE)
        token = cookie or sessions.new_csrf_token()
        scope.setdefault("state", {})["csrf"] = token
        if cookie == token:
            return await self.app(scope, receive, send)
        setter = Response()
        setter.set_cookie(sessions.CSRF_COOKIE, token, httponly=True, samesite="strict",
                          secure=scope.get("scheme") == "https", path="/ui")
        cookie_header = next(h for h in setter.raw_headers if h[0] == b"set-cookie")

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), cookie_header]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def mount_server_ui(app: FastAPI, database, blob_store) -> None:
    """Add the web UI (with login) to the server's app."""

    app.add_middleware(CsrfCookie)

    def get_data(request: Request) -> UIData:
        secret = request.cookies.get(sessions.SESSION_COOKIE)
        if not secret:
            raise routes.LoginRequired()
        # The session is checked by the request's first read, in its transaction (one
        # pooled connection and snapshot per page instead of two).
        return ServerData(database, session=secret,
                          on_user=lambda user: setattr(request.state, "ui_user", user))

    router, page = routes.build_router(get_data, login=True)

    @router.get(routes.PREFIX + "/login", include_in_schema=False)
    def login_form(request: Request, next: str | None = None) -> Response:
        return page(request, "login.html", next=_safe_next(next), error=None)

    @router.post(routes.PREFIX + "/login", include_in_schema=False)
    def login(request: Request, token: str = Form("", max_length=200),
              csrf: str = Form("", max_length=200),
              next: str = Form("/ui/", max_length=4096)) -> Response:
        if not sessions.csrf_ok(request.cookies.get(sessions.CSRF_COOKIE), csrf):
            return page(request, "login.html", status_code=403, next=_safe_next(next),
                        error="The form expired (its security token did not match). "
                              "Try: submit it again.")
        try:
            user, secret = sessions.login(database, token)
        except AuthError as exc:
            return page(request, "login.html", status_code=401, next=_safe_next(next),
                        error=f"That token was not accepted ({exc}). Try: the token printed "
                              "by `runstore user add NAME` or `runstore user token NAME`.")
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(sessions.SESSION_COOKIE, secret, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", path="/ui",
                            max_age=sessions.SESSION_TTL_S)
        request.state.ui_user = user
        return response

    @router.post(routes.PREFIX + "/logout", include_in_schema=False)
    def logout(request: Request, csrf: str = Form("", max_length=200)) -> Response:
        if not sessions.csrf_ok(request.cookies.get(sessions.CSRF_COOKIE), csrf):
            raise routes.BadRequest("the logout form's security token did not match. "
                                    "Try: reload the page and log out again")
        sessions.logout(database, request.cookies.get(sessions.SESSION_COOKIE))
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(sessions.SESSION_COOKIE, path="/ui")
        return response

    routes.install(app, router)


@contextlib.asynccontextmanager
async def frozen_startup_heap(app: FastAPI) -> AsyncIterator[None]:
    """Move everything alive at startup (modules, the app, SQLAlchemy's metadata: objects that
    live as long as the process) out of the cyclic garbage collector's sight (gc.freeze).

    Why: a chart request allocates tens of thousands of short-lived objects, which triggers
    full collections; each one scanned the whole startup heap and cost 50-70 ms, the p95 of
    chart requests (benchmarks/ui_latency.py: p95 68 -> 23 ms, p50 unchanged at 13 ms).

    And collect the youngest generation every 50,000 allocations instead of 700: a metric
    chunk of 20,000 rows allocates ~100,000 objects while it is parsed and decoded, and the
    default threshold ran ~140 collections per chunk that traversed the growing row list again
    and again (parse + decode of a chunk 95 -> 23 ms; benchmarks/ingest.py). Cyclic garbage
    waits a little longer; reference counting still frees everything else at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    yield


def create_local_app(home: Path) -> FastAPI:
    """The read-only UI over the local store in ``home``."""
    data = LocalData(home)
    app = FastAPI(title="runstore ui", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=frozen_startup_heap)
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])

    def get_data(request: Request) -> UIData:
        request.state.csrf = ""
        return data

    routes.install(app, routes.build_router(get_data, login=False)[0])
    app.add_middleware(ServerTiming)
    return app


__all__ = ["mount_server_ui", "create_local_app"]
