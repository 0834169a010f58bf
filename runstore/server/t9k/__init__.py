"""The AIStore API subset that unmodified t9k 0.6 clients (``t9k.em``, the ``em`` CLI) speak,
served under PREFIX by ``runstore serve``. See docs/T9K.md.

Authentication is only by the ``apikey=<uuid>`` query parameter (``runstore user token NAME
--t9k``), checked in app.py's Gate through ``authenticate`` below; nothing under PREFIX ever
redirects (a t9k client reads a 302 as "API Key not provided").
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi.responses import PlainTextResponse

from runstore.server import auth
from runstore.server.db import Database

PREFIX = "/t9k/aistore/server"
# One request body: a whole object up to t9k's single-request limit (100 MiB) or one part of a
# multipart upload (t9k sends parts of floor(sqrt(size in MiB)) MiB: this allows files up to
# 64 GiB), plus the multipart form's overhead.
BODY_LIMIT = 257 * 1024 * 1024


def under_prefix(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def authenticate(database: Database, scope: dict) -> PlainTextResponse | None:
    """Put the api key's user in scope["state"]; else 401 with a one-line reason.

    Not AIStore's 400 ``api key ... not found``: t9k 0.6's login() swallows the RuntimeError
    it makes of that and then fails with an AttributeError ('user_name'); a 401 reaches the
    user as an HTTPError that carries this text."""
    if scope["path"].endswith("/"):  # FastAPI would redirect to the path without it
        return PlainTextResponse(f"no such path: {scope['path']}", status_code=404)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    keys = query.get("apikey") or [""]
    if not keys[0]:
        return PlainTextResponse(
            "missing api key: add ?apikey=<key>. Try: runstore user token NAME --t9k",
            status_code=401)
    try:
        user = auth.authenticate_t9k(database, keys[0])
    except auth.AuthError:
        return PlainTextResponse(
            "api key not found or revoked. Try: runstore user token NAME --t9k",
            status_code=401)
    scope.setdefault("state", {})["user"] = user
    return None


def register(app, database: Database, blobs, data_dir) -> None:
    """Add the compatibility routes to the app."""
    from runstore.server.t9k import graphs, objects  # noqa: F401  (add their routes)
    from runstore.server.t9k.routes import router

    app.state.t9k_multipart = data_dir / "t9k-multipart"
    # Not in runstore's OpenAPI document: a different API, with its own auth and error shape.
    app.include_router(router, prefix=PREFIX, include_in_schema=False)


__all__ = ["PREFIX", "BODY_LIMIT", "under_prefix", "authenticate", "register"]
