"""Users and API tokens.

A token is ``rst_<id>_<secret>``: the id (public, 12 hex characters) finds the row, the sha256
of the whole token is what is stored, and the comparison is ``hmac.compare_digest``. The
plain token is shown once, by ``runstore user add``; it cannot be recovered from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from runstore.server import db
from runstore.server.errors import AuthError as AuthError
from runstore.server.errors import NoSuchUser as NoSuchUser
from runstore.server.errors import UserExists as UserExists
from runstore.server.paths import check_user

TOKEN_RE = re.compile(r"rst_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
# A t9k API key (the `apikey=` query parameter of the t9k compatibility API): a lower-case
# UUID, stored like a token (sha256, revocable); its row id is derived from that hash.
T9K_KEY_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class User:
    id: int
    name: str

    @property
    def root(self) -> str:
        return f"/{self.name}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(database: db.Database, name: str) -> str:
    """Create a user (and its first token); returns the token."""
    check_user(name)
    exists = UserExists(f"user {name!r} already exists. Try: runstore user token {name}")
    try:
        with database.write() as conn:
            if conn.execute(select(db.users.c.id).where(db.users.c.name == name)).first():
                raise exists
            user_id = db.insert_returning_id(
                conn, db.users.insert().values(name=name, created_at=time.time()))
            return _new_token(conn, user_id, name)
    except IntegrityError:  # added concurrently (PostgreSQL: the unique name decided it)
        raise exists from None


def new_token(database: db.Database, name: str) -> str:
    """An additional token for an existing user."""
    with database.write() as conn:
        row = conn.execute(select(db.users.c.id).where(db.users.c.name == name)).first()
        if row is None:
            raise NoSuchUser(f"no user {name!r}. Try: runstore user list")
        return _new_token(conn, row.id, name)


def _new_token(conn, user_id: int, name: str) -> str:
    token_id = secrets.token_hex(6)
    token = f"rst_{token_id}_{secrets.token_urlsafe(32)}"
    conn.execute(db.tokens.insert().values(
        id=token_id, user_id=user_id, token_hash=_hash(token), created_at=time.time()))
    # Also ensure the user's root folder exists, so /<user> is listable from the start.
    ensure_root_folder(conn, user_id, name)
    return token


def ensure_root_folder(conn, user_id: int, name: str) -> None:
    """Create the user's root folder /<name> unless it exists (service.py uses it too)."""
    path = f"/{name}"
    if conn.execute(select(db.folders.c.id).where(db.folders.c.path == path)).first() is None:
        db.insert_ignore(conn, db.folders, owner_id=user_id, path=path, parent_id=None,
                         created_at=time.time())


def new_t9k_key(database: db.Database, name: str) -> str:
    """A t9k API key (a lower-case UUID) for an existing user; listed and revoked like tokens,
    under the id ``t9k-<12 hex>``."""
    key = str(uuid.uuid4())
    with database.write() as conn:
        row = conn.execute(select(db.users.c.id).where(db.users.c.name == name)).first()
        if row is None:
            raise NoSuchUser(f"no user {name!r}")
        conn.execute(db.tokens.insert().values(
            id=_t9k_key_id(key), user_id=row.id, token_hash=_hash(key), created_at=time.time()))
        ensure_root_folder(conn, row.id, name)
    return key


def _t9k_key_id(key: str) -> str:
    return "t9k-" + _hash(key)[:12]


def authenticate_t9k(database: db.Database, key: str | None) -> User:
    """The user of a t9k API key, or AuthError."""
    if not key or not T9K_KEY_RE.fullmatch(key):
        raise AuthError("invalid api key")
    with database.read() as conn:
        row = conn.execute(
            select(db.tokens.c.token_hash, db.tokens.c.revoked_at, db.users.c.id, db.users.c.name)
            .join(db.users, db.users.c.id == db.tokens.c.user_id)
            .where(db.tokens.c.id == _t9k_key_id(key))).first()
    stored = row.token_hash if row is not None else "0" * 64
    if not hmac.compare_digest(_hash(key), stored) or row is None or row.revoked_at is not None:
        raise AuthError("invalid api key")
    return User(row.id, row.name)


def list_users(database: db.Database) -> list[dict]:
    """Users with their active and revoked token ids."""
    out = []
    with database.read() as conn:
        for user in conn.execute(select(db.users).order_by(db.users.c.name)):
            toks = conn.execute(select(db.tokens).where(db.tokens.c.user_id == user.id)
                                .order_by(db.tokens.c.created_at)).all()
            out.append({
                "name": user.name,
                "tokens": [{"id": t.id, "revoked": t.revoked_at is not None} for t in toks],
            })
    return out


def revoke(database: db.Database, name: str, token_id: str | None = None) -> int:
    """Revoke every token of a user, or one token by id; returns how many were revoked."""
    with database.write() as conn:
        user = conn.execute(select(db.users.c.id).where(db.users.c.name == name)).first()
        if user is None:
            raise NoSuchUser(f"no user {name!r}. Try: runstore user list")
        stmt = update(db.tokens).where(db.tokens.c.user_id == user.id,
                                       db.tokens.c.revoked_at.is_(None))
        if token_id is not None:
            stmt = stmt.where(db.tokens.c.id == token_id)
        return conn.execute(stmt.values(revoked_at=time.time())).rowcount


def authenticate(database: db.Database, authorization: str | None) -> User:
    """The user of a 'Bearer <token>' header, or AuthError."""
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError("missing bearer token. Try: runstore login --host URL --token TOKEN")
    token = authorization[7:].strip()
    match = TOKEN_RE.fullmatch(token)
    if match is None:
        raise AuthError("invalid token")
    with database.read() as conn:
        row = conn.execute(
            select(db.tokens.c.token_hash, db.tokens.c.revoked_at, db.users.c.id, db.users.c.name)
            .join(db.users, db.users.c.id == db.tokens.c.user_id)
            .where(db.tokens.c.id == match.group(1))).first()
    # Compare even when the id is unknown, so timing does not tell ids apart.
    stored = row.token_hash if row is not None else "0" * 64
    if not hmac.compare_digest(_hash(token), stored) or row is None:
        raise AuthError("invalid token")
    if row.revoked_at is not None:
        raise AuthError("token revoked")
    return User(row.id, row.name)
