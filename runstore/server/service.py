"""The operations behind the routes. Each takes a SQLAlchemy Connection and the caller.

Every function that writes runs inside ``Database.write()``; races are decided by unique
constraints and conditional UPDATEs, so the same code is correct on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from runstore import protocol as p
from runstore.server import db
from runstore.server.auth import User
from runstore.server.errors import Conflict, Forbidden, Invalid, NameConflict, NotFound, OffsetGap
from runstore.server.paths import (
    BadPath,
    check_object_path,
    check_segment,
    check_sha256,
    check_uuid,
    split_path,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _bad(exc: BadPath) -> Invalid:
    return Invalid(str(exc))


# -- folders ---------------------------------------------------------------------------------
def ensure_root_folder(conn: Connection, user_id: int, name: str) -> None:
    path = f"/{name}"
    if conn.execute(select(db.folders.c.id).where(db.folders.c.path == path)).first() is None:
        conn.execute(db.folders.insert().values(owner_id=user_id, path=path, parent_id=None,
                                                created_at=time.time()))


def _own_parts(user: User, path: str, *, writing: bool) -> list[str]:
    try:
        parts = split_path(path)
    except BadPath as exc:
        raise _bad(exc) from None
    if parts[0] != user.name:
        if writing:
            raise Forbidden(f"you can only write under {user.root}, not {path}")
        raise NotFound(f"{path} not found")
    return parts


def _folder(conn: Connection, user: User, path: str):
    row = conn.execute(select(db.folders).where(db.folders.c.path == path,
                                                db.folders.c.owner_id == user.id)).first()
    if row is None:
        raise NotFound(f"Folder {path} does not exist")
    return row


def ensure_folder(conn: Connection, user: User, path: str, make_parents: bool) -> p.FolderInfo:
    """Create the folder (with parents when asked; the user's default folder always)."""
    parts = _own_parts(user, path, writing=True)
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
def _node(conn: Connection, folder_id: int, name: str):
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


def _decide(conn: Connection, folder, name: str, alternative_name: str,
            strategy: p.ConflictStrategy) -> tuple[p.ClaimOutcome, str | None]:
    """(outcome, node name to store under or None for skipped); raises NameConflict."""
    existing = _node(conn, folder.id, name)
    if existing is None:
        return "created", name
    if strategy == "skip":
        return "skipped", None
    if strategy == "error":
        raise NameConflict(f"{name} already exists in Folder {folder.path}")
    if strategy == "new":
        if _node(conn, folder.id, alternative_name) is not None:
            raise NameConflict(f"{alternative_name} already exists in Folder {folder.path}")
        return "renamed", alternative_name
    kind, row = existing
    _delete_node(conn, kind, row.id)
    return "replaced", name


def _check_names(uuid: str, name: str, alternative_name: str) -> None:
    try:
        check_uuid(uuid)
        check_segment(name, "name")
        check_segment(alternative_name, "alternative name")
    except BadPath as exc:
        raise _bad(exc) from None


def _run_row(conn: Connection, user: User, uuid: str):
    row = conn.execute(select(db.runs, db.folders.c.path.label("folder_path"))
                       .join(db.folders, db.folders.c.id == db.runs.c.folder_id)
                       .where(db.runs.c.owner_id == user.id, db.runs.c.uuid == uuid)).first()
    if row is None:
        raise NotFound(f"run {uuid} not found")
    return row


def _run_meta_values(meta: p.RunMetadata) -> dict[str, Any]:
    return {
        "labels": _dumps(meta.labels), "description": meta.description, "status": meta.status,
        "start_timestamp": meta.start_timestamp, "end_timestamp": meta.end_timestamp,
        "hparams": _dumps(meta.hparams), "platform": _dumps(meta.platform),
        "git": _dumps(meta.git), "remote": _dumps(meta.remote),
    }


def claim_run(conn: Connection, user: User, claim: p.RunClaim) -> p.ClaimResponse:
    """Decide created/resumed/skipped/renamed/replaced (or NameConflict) atomically."""
    _check_names(claim.uuid, claim.name, claim.alternative_name)
    _own_parts(user, claim.folder, writing=True)
    folder = _folder(conn, user, claim.folder)
    try:
        run = _run_row(conn, user, claim.uuid)
    except NotFound:
        run = None
    if run is not None:
        if claim.metadata.status == "Running" and run.complete:
            # Loaded back and continued elsewhere: it is live again until the next finalize.
            conn.execute(update(db.runs).where(db.runs.c.id == run.id).values(
                status="Running", end_timestamp=None, complete=False, updated_at=time.time()))
        return p.ClaimResponse(outcome="resumed", uuid=claim.uuid,
                               remote_path=f"{run.folder_path}/{run.name}",
                               metric_count=run.metric_count,
                               complete=bool(run.complete and claim.metadata.status != "Running"))
    outcome, node_name = _decide(conn, folder, claim.name, claim.alternative_name,
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
    run = _run_row(conn, user, uuid)
    count = run.metric_count
    if offset > count:
        raise OffsetGap(f"offset {offset} leaves a gap: the server holds {count} rows of run "
                        f"{uuid}; send from offset {count}")
    fresh = rows[count - offset:]
    if fresh:
        db.insert_metric_rows(conn, run.id, count, fresh)
        done = conn.execute(update(db.runs).where(
            db.runs.c.id == run.id, db.runs.c.metric_count == count).values(
            metric_count=count + len(fresh), updated_at=time.time())).rowcount
        if done != 1:
            raise Conflict(f"concurrent metric upload for run {uuid}; retry")
    return p.MetricAck(metric_count=count + len(fresh), inserted=len(fresh))


def _artifact_row(conn: Connection, user: User, uuid: str):
    row = conn.execute(select(db.artifacts, db.folders.c.path.label("folder_path"))
                       .join(db.folders, db.folders.c.id == db.artifacts.c.folder_id)
                       .where(db.artifacts.c.owner_id == user.id,
                              db.artifacts.c.uuid == uuid)).first()
    if row is None:
        raise NotFound(f"artifact {uuid} not found")
    return row


def set_lineage(conn: Connection, user: User, uuid: str, lineage: p.Lineage) -> p.Lineage:
    """Replace the run's lineage links (idempotent)."""
    run = _run_row(conn, user, uuid)
    conn.execute(delete(db.lineage).where(db.lineage.c.run_id == run.id))
    for direction, entries in (("input", lineage.input), ("output", lineage.output)):
        for position, item in enumerate(entries):
            artifact_id = None
            if item.artifact_uuid is not None:
                artifact_id = _artifact_row(conn, user, item.artifact_uuid).id
            conn.execute(db.lineage.insert().values(
                run_id=run.id, direction=direction, position=position, kind=item.kind,
                artifact_id=artifact_id, entry=_dumps(item.entry)))
    return lineage


def finalize_run(conn: Connection, user: User, uuid: str,
                 body: p.RunFinalize) -> p.FinalizeResponse:
    run = _run_row(conn, user, uuid)
    if body.metric_count != run.metric_count:
        raise OffsetGap(f"run {uuid}: the server holds {run.metric_count} metric rows, the "
                        f"client finalized with {body.metric_count}; send the missing rows")
    complete = body.metadata.status != "Running"
    conn.execute(update(db.runs).where(db.runs.c.id == run.id).values(
        complete=complete, updated_at=time.time(), **_run_meta_values(body.metadata)))
    return p.FinalizeResponse(uuid=uuid, remote_path=f"{run.folder_path}/{run.name}",
                              metric_count=run.metric_count, complete=complete)


# -- artifacts -------------------------------------------------------------------------------
def missing_blobs(conn: Connection, user: User, shas: list[str]) -> list[str]:
    try:
        wanted = sorted({check_sha256(s) for s in shas})
    except BadPath as exc:
        raise _bad(exc) from None
    have: set[str] = set()
    for i in range(0, len(wanted), 500):
        batch = wanted[i:i + 500]
        have.update(r[0] for r in conn.execute(select(db.blob_owners.c.sha256).where(
            db.blob_owners.c.user_id == user.id, db.blob_owners.c.sha256.in_(batch))))
    return [s for s in wanted if s not in have]


def claim_artifact(conn: Connection, user: User, claim: p.ArtifactClaim) -> p.ClaimResponse:
    _check_names(claim.uuid, claim.name, claim.alternative_name)
    _own_parts(user, claim.folder, writing=True)
    objects: list[p.ArtifactObject] = []
    file_shas: list[str] = []
    seen: set[str] = set()
    for obj in claim.objects:
        try:
            check_object_path(obj.path)
            if obj.kind == "file":
                file_shas.append(check_sha256(obj.sha256))
        except BadPath as exc:
            raise _bad(exc) from None
        if obj.path in seen:
            raise Invalid(f"object path {obj.path!r} appears twice")
        if (obj.kind == "file") != (obj.uri is None):
            raise Invalid(f"object {obj.path!r}: a file has a sha256, a reference a uri")
        seen.add(obj.path)
        objects.append(obj)
    missing = missing_blobs(conn, user, file_shas)
    if missing:
        raise Conflict(f"upload these blobs first: {', '.join(missing[:5])}"
                       + (" ..." if len(missing) > 5 else ""))
    folder = _folder(conn, user, claim.folder)
    meta = claim.metadata
    try:
        existing = _artifact_row(conn, user, claim.uuid)
    except NotFound:
        existing = None
    outcome: p.ClaimOutcome
    if existing is not None:
        outcome, art_id = "resumed", existing.id
        remote_path = f"{existing.folder_path}/{existing.name}"
        conn.execute(delete(db.artifact_objects)
                     .where(db.artifact_objects.c.artifact_id == art_id))
    else:
        outcome, node_name = _decide(conn, folder, claim.name, claim.alternative_name,
                                     claim.conflict_strategy)
        remote_path = f"{folder.path}/{node_name or claim.name}"
        if node_name is None:
            return p.ClaimResponse(outcome=outcome, uuid=claim.uuid, remote_path=remote_path)
        art_id = db.insert_returning_id(conn, db.artifacts.insert().values(
            owner_id=user.id, uuid=claim.uuid, folder_id=folder.id, name=node_name,
            artifact_name=claim.name, alternative_name=claim.alternative_name,
            labels=_dumps(meta.labels), description=meta.description,
            created_timestamp=meta.created_timestamp, remote=_dumps(meta.remote),
            created_at=time.time()))
    if objects:
        conn.execute(db.artifact_objects.insert(), [
            {"artifact_id": art_id, "path": o.path, "kind": o.kind, "sha256": o.sha256,
             "size_bytes": o.size_bytes, "uri": o.uri} for o in objects])
    return p.ClaimResponse(outcome=outcome, uuid=claim.uuid, remote_path=remote_path,
                           complete=True)


def artifact_detail(conn: Connection, user: User, uuid: str) -> p.ArtifactDetail:
    row = _artifact_row(conn, user, uuid)
    objs = conn.execute(select(db.artifact_objects).where(
        db.artifact_objects.c.artifact_id == row.id).order_by(db.artifact_objects.c.path))
    return p.ArtifactDetail(
        uuid=row.uuid, name=row.artifact_name, alternative_name=row.alternative_name,
        path=f"{row.folder_path}/{row.name}", folder=row.folder_path,
        metadata=p.ArtifactMetadata(labels=json.loads(row.labels), description=row.description,
                                    created_timestamp=row.created_timestamp,
                                    remote=json.loads(row.remote)),
        objects=[p.ArtifactObject(path=o.path, kind=o.kind, sha256=o.sha256,
                                  size_bytes=o.size_bytes, uri=o.uri) for o in objs])


def may_read_blob(conn: Connection, user: User, sha: str) -> bool:
    return conn.execute(select(db.blob_owners.c.sha256).where(
        db.blob_owners.c.user_id == user.id, db.blob_owners.c.sha256 == sha)).first() is not None


# -- read side -------------------------------------------------------------------------------
def _run_summary(row, folder_path: str) -> p.NodeSummary:
    return p.NodeSummary(
        kind="Run", name=row.run_name, alternative_name=row.alternative_name, uuid=row.uuid,
        status=row.status, start_timestamp=row.start_timestamp,
        end_timestamp=row.end_timestamp, labels=json.loads(row.labels),
        path=f"{folder_path}/{row.name}", complete=bool(row.complete))


def list_folder(conn: Connection, user: User, path: str) -> p.FolderListing:
    _own_parts(user, path, writing=False)
    folder = _folder(conn, user, path)
    subs = [r.path for r in conn.execute(select(db.folders.c.path).where(
        db.folders.c.parent_id == folder.id).order_by(db.folders.c.path))]
    nodes = [_run_summary(r, path) for r in conn.execute(
        select(db.runs).where(db.runs.c.folder_id == folder.id).order_by(db.runs.c.name))]
    for a in conn.execute(select(db.artifacts).where(db.artifacts.c.folder_id == folder.id)
                          .order_by(db.artifacts.c.name)):
        nodes.append(p.NodeSummary(
            kind="Artifact", name=a.artifact_name, alternative_name=a.alternative_name,
            uuid=a.uuid, status=None, start_timestamp=a.created_timestamp, end_timestamp=None,
            labels=json.loads(a.labels), path=f"{path}/{a.name}", complete=True))
    return p.FolderListing(path=path, folders=subs, nodes=nodes)


def list_runs(conn: Connection, user: User) -> list[p.NodeSummary]:
    rows = conn.execute(select(db.runs, db.folders.c.path.label("folder_path"))
                        .join(db.folders, db.folders.c.id == db.runs.c.folder_id)
                        .where(db.runs.c.owner_id == user.id)
                        .order_by(db.folders.c.path, db.runs.c.name))
    return [_run_summary(r, r.folder_path) for r in rows]


def resolve(conn: Connection, user: User, path: str) -> p.ResolvedNode:
    parts = _own_parts(user, path, writing=False)
    row = conn.execute(select(db.folders.c.id).where(db.folders.c.path == path,
                                                     db.folders.c.owner_id == user.id)).first()
    if row is not None:
        return p.ResolvedNode(kind="Folder", path=path)
    if len(parts) < 2:
        raise NotFound(f"{path} not found")
    parent = "/" + "/".join(parts[:-1])
    try:
        folder = _folder(conn, user, parent)
    except NotFound:
        raise NotFound(f"{path} not found") from None
    node = _node(conn, folder.id, parts[-1])
    if node is None:
        raise NotFound(f"{path} not found")
    return p.ResolvedNode(kind=node[0], path=path, uuid=node[1].uuid)


def run_detail(conn: Connection, user: User, uuid: str) -> p.RunDetail:
    run = _run_row(conn, user, uuid)
    keys = [[t, k] for t, k in conn.execute(
        select(db.metrics.c.type, db.metrics.c.key).where(db.metrics.c.run_id == run.id)
        .group_by(db.metrics.c.type, db.metrics.c.key).order_by(db.metrics.c.type,
                                                                db.metrics.c.key))]
    lineage = p.Lineage()
    art_uuids: list[str] = []
    rows = conn.execute(select(db.lineage, db.artifacts.c.uuid.label("artifact_uuid"))
                        .outerjoin(db.artifacts, db.artifacts.c.id == db.lineage.c.artifact_id)
                        .where(db.lineage.c.run_id == run.id)
                        .order_by(db.lineage.c.direction, db.lineage.c.position))
    for r in rows:
        item = p.LineageEntry(kind=r.kind, artifact_uuid=r.artifact_uuid,
                              entry=json.loads(r.entry))
        getattr(lineage, r.direction).append(item)
        if r.artifact_uuid and r.artifact_uuid not in art_uuids:
            art_uuids.append(r.artifact_uuid)
    meta = p.RunMetadata(
        labels=json.loads(run.labels), description=run.description, status=run.status,
        start_timestamp=run.start_timestamp, end_timestamp=run.end_timestamp,
        hparams=json.loads(run.hparams), platform=json.loads(run.platform),
        git=json.loads(run.git), remote=json.loads(run.remote))
    return p.RunDetail(uuid=run.uuid, name=run.run_name, alternative_name=run.alternative_name,
                       path=f"{run.folder_path}/{run.name}", folder=run.folder_path,
                       complete=bool(run.complete), metric_count=run.metric_count,
                       metadata=meta, metric_keys=keys, lineage=lineage, artifacts=art_uuids)


def metric_page(conn: Connection, user: User, uuid: str, offset: int, limit: int,
                type_: str | None, key: str | None) -> p.MetricPage:
    run = _run_row(conn, user, uuid)
    m = db.metrics.c
    stmt = select(m.seq, m.type, m.key, m.step, m.epoch, m.value, m.timestamp).where(
        m.run_id == run.id, m.seq >= offset)
    if type_ is not None:
        stmt = stmt.where(m.type == type_)
    if key is not None:
        stmt = stmt.where(m.key == key)
    rows = conn.execute(stmt.order_by(m.seq).limit(limit)).all()
    next_offset = rows[-1][0] + 1 if rows else max(offset, run.metric_count)
    return p.MetricPage(offset=next_offset, metric_count=run.metric_count,
                        rows=[p.encode_metric_row(tuple(r[1:])) for r in rows])


def count_runs(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(db.runs)).scalar_one()


