"""Login sessions of the server's web UI, and CSRF tokens.

A session is a random secret in an HttpOnly, SameSite=Lax cookie; the database holds only its
sha256, the user and the API token it was opened with (revoking the token ends it; it expires
after SESSION_TTL_S). Stored in the server's database, so every replica behind a load
balancer knows it.

CSRF: every state-changing form (login, logout) carries a token that must equal the
``runstore_csrf`` cookie (double submit). Another site can make a browser send the cookie but
can neither read it nor set it, so it cannot fill in the field.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from runstore.server import db
from runstore.server.auth import TOKEN_RE, AuthError, User, authenticate

SESSION_COOKIE = "runstore_session"
CSRF_COOKIE = "runstore_csrf"
SESSION_TTL_S = 14 * 24 * 3600


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, field: str | None) -> bool:
    """Whether a form's CSRF field matches the browser's CSRF cookie."""
    return bool(cookie) and bool(field) and hmac.compare_digest(str(cookie), str(field))


def login(database: db.Database, token: str, now: float | None = None) -> tuple[User, str]:
    """Open a session for an API token: (user, cookie secret), or AuthError."""
    token = token.strip()
    user = authenticate(database, f"Bearer {token}")
    match = TOKEN_RE.fullmatch(token)
    if match is None:  # authenticate() accepted it, so this cannot happen
        raise AuthError("invalid token")
    secret = secrets.token_urlsafe(32)
    now = time.time() if now is None else now
    with database.write() as conn:
        conn.execute(delete(db.ui_sessions).where(db.ui_sessions.c.expires_at < now))
        conn.execute(db.ui_sessions.insert().values(
            id_hash=_hash(secret), user_id=user.id, token_id=match.group(1), created_at=now,
            expires_at=now + SESSION_TTL_S))
    return user, secret


def user_in(conn: Connection, secret: str | None, now: float | None = None) -> User | None:
    """The user of a live session cookie, or None (in a read transaction of the caller's:
    the page's own, runstore/ui/serverdata.py)."""
    if not secret or len(secret) > 100:
        return None
    s, t, u = db.ui_sessions.c, db.tokens.c, db.users.c
    now = time.time() if now is None else now
    row = conn.execute(
        select(u.id, u.name).select_from(db.ui_sessions)
        .join(db.tokens, t.id == s.token_id).join(db.users, u.id == s.user_id)
        .where(s.id_hash == _hash(secret), s.expires_at > now,
               t.revoked_at.is_(None), t.user_id == s.user_id)).first()
    return User(row.id, row.name) if row is not None else None


def logout(database: db.Database, secret: str | None) -> None:
    """End a session (no-op if there is none)."""
    if secret:
        with database.write() as conn:
            conn.execute(delete(db.ui_sessions).where(db.ui_sessions.c.id_hash == _hash(secret)))
