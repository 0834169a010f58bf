"""The AIStore node tree as t9k clients see it, over the server's own tables.

A t9k Folder is a row of ``folders``, a Run a row of ``runs``, an Artifact a row of
``artifacts``: there is no second copy of anything, so a run uploaded by a t9k client is a
runstore run and the reverse. Node ids are the runs' and artifacts' uuids; a folder's id is
derived from its path (uuid5), since folders have no uuid of their own.

Every function takes a Connection and the authenticated user, and raises T9kError with the
status and text the t9k 0.6 client parses (client.py): a missing node is 404
``node not found [<path>]``, a name clash 400 ``Invalid conflicting node Name``, anything
under another user's root 403 ``permission denied``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from runstore.server import db
from runstore.server.auth import User
from runstore.server.paths import BadPath, check_segment, check_user, split_path
from runstore.server.service import _delete_node, dumps, node_named
from runstore.timeutil import iso_from_unix, now_iso

FOLDER_NS = uuid.UUID("8a1d6c1e-6f2b-4a57-9d3e-2c7d0b5e9f11")
NODE_TYPES = ("Folder", "Run", "Artifact")


class T9kError(Exception):
    """An answer for a t9k client: an HTTP status and the plain-text body it parses."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def denied() -> T9kError:
    return T9kError(403, "permission denied")


def not_found(what: str) -> T9kError:
    return T9kError(404, f"node not found [{what}]")


def folder_id(path: str) -> str:
    return str(uuid.uuid5(FOLDER_NS, path))


def own_parts(user: User, path: Any) -> list[str]:
    """The segments of an absolute node path; 403 outside the user's root, 400 if malformed."""
    if isinstance(path, str) and path.startswith("/"):
        first = path[1:].split("/", 1)[0]
        if first != user.name:
            raise denied()
    try:
        return split_path(path)
    except BadPath as exc:
        raise T9kError(400, str(exc)) from None


def _folder(conn: Connection, user: User, path: str):
    return conn.execute(select(db.folders).where(db.folders.c.path == path,
                                                 db.folders.c.owner_id == user.id)).first()


def locate(conn: Connection, user: User, node: str) -> tuple[str, Any, str]:
    """(type, row, path) of a node given by path or id; 404 if there is none."""
    if not isinstance(node, str) or not node:
        raise T9kError(400, "missing node")
    if not node.startswith("/"):
        return by_id(conn, user, node)
    parts = own_parts(user, node)
    folder = _folder(conn, user, node)
    if folder is not None:
        return "Folder", folder, node
    if len(parts) >= 2:
        parent = _folder(conn, user, "/" + "/".join(parts[:-1]))
        if parent is not None:
            found = node_named(conn, parent.id, parts[-1])
            if found is not None:
                return found[0], full_row(conn, found[0], found[1].id), node
    raise not_found(node)


def full_row(conn: Connection, kind: str, row_id: int):
    table = db.runs if kind == "Run" else db.artifacts
    return conn.execute(select(table, db.folders.c.path.label("folder_path"))
                        .join(db.folders, db.folders.c.id == table.c.folder_id)
                        .where(table.c.id == row_id)).first()


def by_id(conn: Connection, user: User, node_id: str) -> tuple[str, Any, str]:
    """A node by its id (a run's or artifact's uuid, or a folder's derived id)."""
    for kind, table in (("Run", db.runs), ("Artifact", db.artifacts)):
        row = conn.execute(select(table.c.id).where(table.c.owner_id == user.id,
                                                    table.c.uuid == node_id)).first()
        if row is not None:
            full = full_row(conn, kind, row.id)
            return kind, full, f"{full.folder_path}/{full.name}"
    for folder in conn.execute(select(db.folders).where(db.folders.c.owner_id == user.id)):
        if folder_id(folder.path) == node_id:
            return "Folder", folder, folder.path
    raise not_found(node_id)


def describe(kind: str, row: Any, path: str) -> dict[str, Any]:
    """The node as AIStore returns it (``extra`` is a JSON string, as the client expects)."""
    parent, _, name = path.rpartition("/")
    if kind == "Folder":
        return {"id": folder_id(path), "name": name, "parent": parent, "path": path,
                "type": "Folder", "labels": [], "description": "", "storageType": 0,
                "extra": json.dumps({"createdTimestamp": iso_from_unix(row.created_at)})}
    extra = {"alternativeName": row.alternative_name}
    return {"id": row.uuid, "name": name, "parent": parent, "path": path, "type": kind,
            "labels": json.loads(row.labels), "description": row.description,
            "storageType": 2, "extra": json.dumps(extra)}


def children(conn: Connection, user: User, parent: str, kind: str | None) -> list[dict]:
    """The nodes directly in a folder (folders first), optionally of one type."""
    own_parts(user, parent)
    folder = _folder(conn, user, parent)
    if folder is None:
        raise not_found(parent)
    out: list[dict] = []
    if kind in (None, "Folder"):
        for sub in conn.execute(select(db.folders).where(db.folders.c.parent_id == folder.id)
                                .order_by(db.folders.c.path)):
            out.append(describe("Folder", sub, sub.path))
    for k, table in (("Run", db.runs), ("Artifact", db.artifacts)):
        if kind in (None, k):
            for row in conn.execute(select(table.c.id).where(table.c.folder_id == folder.id)
                                    .order_by(table.c.name)):
                full = full_row(conn, k, row.id)
                out.append(describe(k, full, f"{parent}/{full.name}"))
    return out


def _text(body: dict, key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise T9kError(400, f"{key} must be a string")
    return value


def create(conn: Connection, user: User, body: Any) -> str:
    """POST /apis/v1/nodes: a Folder, Run or Artifact in an existing folder; returns its id."""
    if not isinstance(body, dict):
        raise T9kError(400, "the body must be a JSON object")
    kind = body.get("type")
    if kind not in NODE_TYPES:
        raise T9kError(400, f"invalid node type {str(kind)[:40]!r}: use Folder, Run or Artifact")
    parent, name = _text(body, "parent"), _text(body, "name")
    labels = body.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise T9kError(400, "labels must be a list of strings")
    description = _text(body, "description")
    own_parts(user, parent)
    try:
        check_segment(name, "node name")
    except BadPath as exc:
        raise T9kError(400, str(exc)) from None
    db.lock_user(conn, user.id)
    folder = _folder(conn, user, parent)
    if folder is None:
        raise not_found(parent)
    path = f"{parent}/{name}"
    if node_named(conn, folder.id, name) is not None or _folder(conn, user, path) is not None:
        raise T9kError(400, f"Invalid conflicting node Name: {name}")
    now = time.time()
    if kind == "Folder":
        db.insert_returning_id(conn, db.folders.insert().values(
            owner_id=user.id, path=path, parent_id=folder.id, created_at=now))
        return folder_id(path)
    alternative = _alternative_name(body.get("extra"), name)
    node_uuid = str(uuid.uuid4())
    if kind == "Run":
        conn.execute(db.runs.insert().values(
            owner_id=user.id, uuid=node_uuid, folder_id=folder.id, name=name, run_name=name,
            alternative_name=alternative, labels=dumps(labels), description=description,
            status="Running", start_timestamp=now_iso(), end_timestamp=None, hparams="{}",
            platform="{}", git="{}", remote="[]", metric_count=0, complete=False,
            generation=0, created_at=now, updated_at=now))
    else:
        conn.execute(db.artifacts.insert().values(
            owner_id=user.id, uuid=node_uuid, folder_id=folder.id, name=name,
            artifact_name=name, alternative_name=alternative, labels=dumps(labels),
            description=description, created_timestamp=now_iso(), remote="[]",
            created_at=now))
    return node_uuid


def _alternative_name(extra: Any, default: str) -> str:
    """The alternativeName in a node's ``extra`` (a JSON string), else the node name."""
    if extra in (None, ""):
        return default
    try:
        data = json.loads(extra) if isinstance(extra, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise T9kError(400, "extra must be a JSON object in a string")
    alternative = data.get("alternativeName", default)
    try:
        return check_segment(alternative, "alternativeName")
    except BadPath as exc:
        raise T9kError(400, str(exc)) from None


def delete(conn: Connection, user: User, node: Any) -> None:
    """DELETE /apis/v1/nodes: a Run or Artifact with everything it holds."""
    db.lock_user(conn, user.id)
    kind, row, path = locate(conn, user, node)
    if kind == "Folder":
        raise T9kError(400, f"deleting a Folder is not supported: {path}")
    _delete_node(conn, kind, row.id)


def split_object(conn: Connection, user: User, path: Any) -> tuple[str, Any, str, str]:
    """'/u/folder/node/some/key' -> (type, node row, node path, 'some/key'); the key is
    checked by the caller."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise T9kError(400, "path must be an absolute object path like /user/folder/run/key")
    parts = path[1:].split("/")
    if parts[0] != user.name:
        raise denied()
    try:
        check_user(parts[0])
    except BadPath as exc:
        raise T9kError(400, str(exc)) from None
    depth = 1
    while depth < len(parts) and _folder(conn, user, "/" + "/".join(parts[:depth + 1])):
        depth += 1
    if depth >= len(parts):
        raise not_found(path)
    folder = _folder(conn, user, "/" + "/".join(parts[:depth]))
    found = node_named(conn, folder.id, parts[depth]) if folder is not None else None
    if found is None:
        raise not_found("/" + "/".join(parts[:depth + 1]))
    node_path = "/" + "/".join(parts[:depth + 1])
    return found[0], full_row(conn, found[0], found[1].id), node_path, \
        "/".join(parts[depth + 1:])
