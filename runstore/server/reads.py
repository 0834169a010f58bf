"""The read side: folder listings, path resolution, run detail and metric pages.

Nothing here writes; every function runs inside ``Database.read()``.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.engine import Connection

from runstore import protocol as p
from runstore.server import db
from runstore.server.auth import User
from runstore.server.errors import NotFound
from runstore.server.service import (
    folder_row,
    node_named,
    own_parts,
    run_row,
)


def _run_summary(row, folder_path: str) -> p.NodeSummary:
    return p.NodeSummary(
        kind="Run", name=row.run_name, alternative_name=row.alternative_name, uuid=row.uuid,
        status=row.status, start_timestamp=row.start_timestamp,
        end_timestamp=row.end_timestamp, labels=json.loads(row.labels),
        path=f"{folder_path}/{row.name}", complete=bool(row.complete))


def list_folder(conn: Connection, user: User, path: str) -> p.FolderListing:
    own_parts(user, path, writing=False)
    folder = folder_row(conn, user, path)
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
    parts = own_parts(user, path, writing=False)
    row = conn.execute(select(db.folders.c.id).where(db.folders.c.path == path,
                                                     db.folders.c.owner_id == user.id)).first()
    if row is not None:
        return p.ResolvedNode(kind="Folder", path=path)
    if len(parts) < 2:
        raise NotFound(f"{path} not found")
    parent = "/" + "/".join(parts[:-1])
    try:
        folder = folder_row(conn, user, parent)
    except NotFound:
        raise NotFound(f"{path} not found") from None
    node = node_named(conn, folder.id, parts[-1])
    if node is None:
        raise NotFound(f"{path} not found")
    return p.ResolvedNode(kind=node[0], path=path, uuid=node[1].uuid)


def run_detail(conn: Connection, user: User, uuid: str) -> p.RunDetail:
    run = run_row(conn, user, uuid)
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
        git=json.loads(run.git), remote=json.loads(run.remote),
        generation=run.generation)
    return p.RunDetail(uuid=run.uuid, name=run.run_name, alternative_name=run.alternative_name,
                       path=f"{run.folder_path}/{run.name}", folder=run.folder_path,
                       complete=bool(run.complete), metric_count=run.metric_count,
                       metadata=meta, metric_keys=keys, lineage=lineage, artifacts=art_uuids)


def metric_page(conn: Connection, user: User, uuid: str, offset: int, limit: int,
                type_: str | None, key: str | None) -> p.MetricPage:
    run = run_row(conn, user, uuid)
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

