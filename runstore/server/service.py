"""The write operations behind the run and folder routes, and the lookups shared with
artifacts.py and reads.py. Each takes a SQLAlchemy Connection and the caller.

Every function that writes runs inside ``Database.write()``; races are decided by unique
constraints, conditional UPDATEs and row locks: a write that decides names or uuids (claims,
folders, lineage, finalize) first locks the user's row (``db.lock_user``), one that appends to
a run locks the run's row (``run_row(..., lock=True)``). On SQLite the single writer already
serialises them; on PostgreSQL the locks do, so the same code is correct there.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from runstore import protocol as p
from runstore.server import db, metricrows
from runstore.server.auth import User, ensure_root_folder
from runstore.server.errors import Conflict, Forbidden, Invalid, NameConflict, NotFound, OffsetGap
from runstore.server.paths import (
    BadPath,
    check_segment,
    check_uuid,
    split_path,
)


def dumps(value: Any) -> str:
    """Compact JSON text for a TEXT column (NaN/inf rejected)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def invalid(exc: BadPath) -> Invalid:
    """A client-facing Invalid (422) for a rejected name or path."""
    return Invalid(str(exc))


# -- folders ---------------------------------------------------------------------------------
def own_parts(user: User, path: str, *, writing: bool) -> list[str]:
    """The path's segments; Forbidden (writing) or NotFound unless it is under the user's root."""
    try:
        parts = split_path(path)
    except BadPath as exc:
        raise invalid(exc) from None
    if parts[0] != user.name:
        if writing:
            raise Forbidden(f"you can only write under {user.root}, not {path}")
        raise NotFound(f"{path} not found")
    return parts


def folder_row(conn: Connection, user: User, path: str):
    """The user's folder row at path, or NotFound."""
    row = conn.execute(select(db.folders).where(db.folders.c.path == path,
                                                db.folders.c.owner_id == user.id)).first()
    if row is None:
        raise NotFound(f"Folder {path} does not exist")
    return row


def ensure_folder(conn: Connection, user: User, path: str, make_parents: bool) -> p.FolderInfo:
    """Create the folder (with parents when asked; the user's default folder always)."""
    parts = own_parts(user, path, writing=True)
    db.lock_user(conn, user.id)
    ensure_root_folder(conn, user.id, user.name)
    allowed = make_parents or parts == [user.name, "default"]
    parent_id, created = None, False
    for depth in range(1, len(parts) + 1):
        sub = "/" + "/".join(parts[:depth])
        row = conn.execute(select(db.folders.c.id, db.folders.c.owner_id)
                           .where(db.folders.c.path == sub)).first()
        if row is None:
            if not allowed:
                raise NotFound(f"Folder {path} does not exist. Try: make_folder=True (-m)")
            parent_id = db.insert_returning_id(conn, db.folders.insert().values(
                owner_id=user.id, path=sub, parent_id=parent_id, created_at=time.time()))
            created = True
        else:
            if row.owner_id != user.id:  # cannot happen for a checked root, but never trust it
                raise Forbidden(f"you can only write under {user.root}")
            parent_id = row.id
    return p.FolderInfo(path=path, created=created)


# -- nodes (runs and artifacts share the names of a folder) ----------------------------------
def node_named(conn: Connection, folder_id: int, name: str):
    """("Run"|"Artifact", row) holding name in the folder, or None."""
    run = conn.execute(select(db.runs.c.id, db.runs.c.uuid).where(
        db.runs.c.folder_id == folder_id, db.runs.c.name == name)).first()
    if run is not None:
        return "Run", run
    art = conn.execute(select(db.artifacts.c.id, db.artifacts.c.uuid).where(
        db.artifacts.c.folder_id == folder_id, db.artifacts.c.name == name)).first()
    if art is not None:
        return "Artifact", art
    return None


def _delete_node(conn: Connection, kind: str, node_id: int) -> None:
    if kind == "Run":
        conn.execute(delete(db.metrics).where(db.metrics.c.run_id == node_id))
        conn.execute(delete(db.lineage).where(db.lineage.c.run_id == node_id))
        conn.execute(delete(db.runs).where(db.runs.c.id == node_id))
    else:
        conn.execute(update(db.lineage).where(db.lineage.c.artifact_id == node_id)
                     .values(artifact_id=None))
        conn.execute(delete(db.artifact_objects)
                     .where(db.artifact_objects.c.artifact_id == node_id))
        conn.execute(delete(db.artifacts).where(db.artifacts.c.id == node_id))


def decide_name(conn: Connection, folder, name: str, alternative_name: str,
            strategy: p.ConflictStrategy) -> tuple[p.ClaimOutcome, str | None]:
    """(outcome, node name to store under or None for skipped); raises NameConflict."""
    existing = node_named(conn, folder.id, name)
    if existing is None:
        return "created", name
    if strategy == "skip":
        return "skipped", None
    if strategy == "error":
        raise NameConflict(f"{name} already exists in Folder {folder.path}")
    if strategy == "new":
        if node_named(conn, folder.id, alternative_name) is not None:
            raise NameConflict(f"{alternative_name} already exists in Folder {folder.path}")
        return "renamed", alternative_name
    kind, row = existing
    _delete_node(conn, kind, row.id)
    return "replaced", name


def check_names(uuid: str, name: str, alternative_name: str) -> None:
    """Invalid unless the uuid and both names are acceptable."""
    try:
        check_uuid(uuid)
        check_segment(name, "name")
        check_segment(alternative_name, "alternative name")
    except BadPath as exc:
        raise invalid(exc) from None


def run_row(conn: Connection, user: User, uuid: str, *, lock: bool = False):
    """The user's run row (with folder_path), or NotFound. lock: SELECT ... FOR UPDATE OF
    runs (until the transaction ends; a no-op on SQLite, whose writer is alone anyway)."""
    stmt = (select(db.runs, db.folders.c.path.label("folder_path"))
            .join(db.folders, db.folders.c.id == db.runs.c.folder_id)
            .where(db.runs.c.owner_id == user.id, db.runs.c.uuid == uuid))
    if lock:
        stmt = stmt.with_for_update(of=db.runs)
    row = conn.execute(stmt).first()
    if row is None:
        raise NotFound(f"run {uuid} not found")
    return row


def _run_meta_values(meta: p.RunMetadata) -> dict[str, Any]:
    return {
        "labels": dumps(meta.labels), "description": meta.description, "status": meta.status,
        "start_timestamp": meta.start_timestamp, "end_timestamp": meta.end_timestamp,
        "hparams": dumps(meta.hparams), "platform": dumps(meta.platform),
        "git": dumps(meta.git), "remote": dumps(meta.remote), "generation": meta.generation,
    }


def _is_stale(run: Any, generation: int, status: str) -> bool:
    """True if (generation, status) is an older state of the run than the server holds.

    States are ordered by (generation, complete): a re-open (load_run) starts a newer
    generation; within one, Running comes before the finish. A slow upload that read the run
    before it finished must not undo the finalize of a faster one.
    """
    return (generation, status != "Running") < (run.generation, bool(run.complete))


def claim_run(conn: Connection, user: User, claim: p.RunClaim) -> p.ClaimResponse:
    """Decide created/resumed/skipped/renamed/replaced (or NameConflict) atomically."""
    check_names(claim.uuid, claim.name, claim.alternative_name)
    own_parts(user, claim.folder, writing=True)
    db.lock_user(conn, user.id)  # from here on, no other claim of this user is being decided
    folder = folder_row(conn, user, claim.folder)
    try:
        run = run_row(conn, user, claim.uuid, lock=True)
    except NotFound:
        run = None
    if run is not None:
        if claim.metadata.generation > run.generation:
            # Loaded back (load_run) and continued: from now on, uploads of an older
            # generation are stale; a Running claim makes it live until the next finalize.
            values: dict[str, Any] = {"generation": claim.metadata.generation,
                                      "updated_at": time.time()}
            if claim.metadata.status == "Running":
                values.update(status="Running", end_timestamp=None, complete=False)
            conn.execute(update(db.runs).where(db.runs.c.id == run.id).values(**values))
            return p.ClaimResponse(outcome="resumed", uuid=claim.uuid,
                                   remote_path=f"{run.folder_path}/{run.name}",
                                   metric_count=run.metric_count,
                                   complete=claim.metadata.status != "Running"
                                   and bool(run.complete))
        return p.ClaimResponse(outcome="resumed", uuid=claim.uuid,
                               remote_path=f"{run.folder_path}/{run.name}",
                               metric_count=run.metric_count,
                               complete=bool(run.complete and claim.metadata.status != "Running"))
    outcome, node_name = decide_name(conn, folder, claim.name, claim.alternative_name,
                                 claim.conflict_strategy)
    if node_name is None:
        return p.ClaimResponse(outcome=outcome, uuid=claim.uuid,
                               remote_path=f"{folder.path}/{claim.name}")
    now = time.time()
    values = _run_meta_values(claim.metadata)
    # Not visible as complete (and shown Running) until finalize.
    values.update(status="Running", end_timestamp=None)
    conn.execute(db.runs.insert().values(
        owner_id=user.id, uuid=claim.uuid, folder_id=folder.id, name=node_name,
        run_name=claim.name, alternative_name=claim.alternative_name, metric_count=0,
        complete=False, created_at=now, updated_at=now, **values))
    return p.ClaimResponse(outcome=outcome, uuid=claim.uuid,
                           remote_path=f"{folder.path}/{node_name}")


def append_metrics(conn: Connection, user: User, uuid: str, offset: int,
                   rows: list[tuple]) -> p.MetricAck:
    """Rows at offset: a replay is a no-op, a gap is OffsetGap, the rest is appended."""
    run = run_row(conn, user, uuid, lock=True)  # concurrent appends to one run: one at a time
    count = run.metric_count
    if offset > count:
        raise OffsetGap(f"offset {offset} leaves a gap: the server holds {count} rows of run "
                        f"{uuid}; send from offset {count}")
    fresh = rows[count - offset:]
    if fresh:
        try:
            metricrows.insert_metric_rows(conn, run.id, count, fresh)
        except metricrows.UnstorableValue as exc:
            raise Invalid(str(exc)) from None
        done = conn.execute(update(db.runs).where(
            db.runs.c.id == run.id, db.runs.c.metric_count == count).values(
            metric_count=count + len(fresh), updated_at=time.time())).rowcount
        if done != 1:
            raise Conflict(f"concurrent metric upload for run {uuid}; retry")
    return p.MetricAck(metric_count=count + len(fresh), inserted=len(fresh))


def artifact_row(conn: Connection, user: User, uuid: str):
    """The user's artifact row (with folder_path), or NotFound."""
    row = conn.execute(select(db.artifacts, db.folders.c.path.label("folder_path"))
                       .join(db.folders, db.folders.c.id == db.artifacts.c.folder_id)
                       .where(db.artifacts.c.owner_id == user.id,
                              db.artifacts.c.uuid == uuid)).first()
    if row is None:
        raise NotFound(f"artifact {uuid} not found")
    return row


def set_lineage(conn: Connection, user: User, uuid: str,
                lineage: p.LineageUpdate) -> p.Lineage:
    """Replace the run's lineage links (idempotent); an older state's links are ignored."""
    db.lock_user(conn, user.id)
    run = run_row(conn, user, uuid, lock=True)
    if _is_stale(run, lineage.generation, lineage.status):
        return p.Lineage(input=lineage.input, output=lineage.output)
    conn.execute(delete(db.lineage).where(db.lineage.c.run_id == run.id))
    for direction, entries in (("input", lineage.input), ("output", lineage.output)):
        for position, item in enumerate(entries):
            artifact_id = None
            if item.artifact_uuid is not None:
                artifact_id = artifact_row(conn, user, item.artifact_uuid).id
            conn.execute(db.lineage.insert().values(
                run_id=run.id, direction=direction, position=position, kind=item.kind,
                artifact_id=artifact_id, entry=dumps(item.entry)))
    return p.Lineage(input=lineage.input, output=lineage.output)


def finalize_run(conn: Connection, user: User, uuid: str,
                 body: p.RunFinalize) -> p.FinalizeResponse:
    db.lock_user(conn, user.id)
    run = run_row(conn, user, uuid, lock=True)
    if _is_stale(run, body.metadata.generation, body.metadata.status):
        # a slower upload of an older state: keep the newer
        return p.FinalizeResponse(uuid=uuid, remote_path=f"{run.folder_path}/{run.name}",
                                  metric_count=run.metric_count, complete=bool(run.complete),
                                  generation=run.generation)
    if body.metric_count != run.metric_count:
        raise OffsetGap(f"run {uuid}: the server holds {run.metric_count} metric rows, the "
                        f"client finalized with {body.metric_count}; send the missing rows")
    complete = body.metadata.status != "Running"
    conn.execute(update(db.runs).where(db.runs.c.id == run.id).values(
        complete=complete, updated_at=time.time(), **_run_meta_values(body.metadata)))
    return p.FinalizeResponse(uuid=uuid, remote_path=f"{run.folder_path}/{run.name}",
                              metric_count=run.metric_count, complete=complete,
                              generation=body.metadata.generation)
