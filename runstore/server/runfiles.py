"""A run's files kept as bytes beside its rows: today only stdout.log (protocol.RUN_FILES).

The bytes are a blob (uploaded through POST/PATCH /uploads: streamed, resumable, verified,
deduplicated); PUT /runs/{uuid}/files/{path} points the run's file at one. The pointer lives in
``t9k_run_files``, the table where the t9k-compatible API already keeps the files of runs that
t9k clients upload (their stdout.log among them), so one row serves every reader: the web UI,
``GET /runs/{uuid}/files/{path}`` and a t9k client that downloads the run (render.run_files).

Which copy wins: stdout.log only ever grows (the SDK's tee appends; t9k's too), so of two
copies the longer one is the later. A PUT of a shorter copy than the server holds is a slow
upload that read the file earlier (a live upload racing the final one, a bundle carried out of
order): it changes nothing, and the answer names the copy kept. Same length, other bytes: the
PUT replaces it (the file was rewritten; the last writer wins, as with t9k's uploads).

Who may point at a blob: only a user who owns it (sent its bytes, blob_owners), with its
recorded size; otherwise a user could name another user's sha256 and read the bytes through
his own run.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from runstore import protocol as p
from runstore.server import db
from runstore.server.auth import User
from runstore.server.errors import Conflict, Invalid, NotFound
from runstore.server.service import run_row


def check_file_path(path: str) -> str:
    """Invalid (422) unless path is a run file the protocol knows (stdout.log)."""
    if path not in p.RUN_FILES:
        raise Invalid(f"run file {path[:100]!r} is not kept by the server. Try: one of "
                      f"{', '.join(sorted(p.RUN_FILES))}")
    return path


def _held(conn: Connection, run_id: int, path: str):
    f = db.t9k_run_files.c
    return conn.execute(select(f.sha256, f.size_bytes).where(
        f.run_id == run_id, f.path == path, f.sha256.is_not(None))).first()


def set_run_file(conn: Connection, user: User, uuid: str, path: str,
                 body: p.RunFileSet) -> p.RunFileInfo:
    """Point the run's file at an owned blob, unless the server holds a longer copy."""
    check_file_path(path)
    run = run_row(conn, user, uuid, lock=True)  # PUTs of one run's files: one at a time
    size = conn.execute(select(db.blobs.c.size_bytes).join(
        db.blob_owners, db.blob_owners.c.sha256 == db.blobs.c.sha256).where(
        db.blob_owners.c.user_id == user.id, db.blobs.c.sha256 == body.sha256)).scalar()
    if size is None:
        raise Conflict(f"upload blob {body.sha256} first (POST /uploads), then set {path}")
    if size != body.size_bytes:
        raise Invalid(f"blob {body.sha256} holds {size} bytes, not {body.size_bytes}")
    held = _held(conn, run.id, path)
    if held is not None and (held.sha256 == body.sha256 or held.size_bytes > size):
        return p.RunFileInfo(path=path, sha256=held.sha256, size_bytes=held.size_bytes)
    f = db.t9k_run_files.c
    conn.execute(delete(db.t9k_run_files).where(f.run_id == run.id, f.path == path))
    conn.execute(db.t9k_run_files.insert().values(run_id=run.id, path=path, sha256=body.sha256,
                                                  size_bytes=size, records=0))
    return p.RunFileInfo(path=path, sha256=body.sha256, size_bytes=size)


def run_file(conn: Connection, user: User, uuid: str, path: str) -> p.RunFileInfo:
    """The blob the run's file points at; NotFound if the run (for this user) or the file is
    absent."""
    check_file_path(path)
    run = run_row(conn, user, uuid)
    held = _held(conn, run.id, path)
    if held is None:
        raise NotFound(f"run {uuid} has no {path} on the server")
    return p.RunFileInfo(path=path, sha256=held.sha256, size_bytes=int(held.size_bytes or 0))
