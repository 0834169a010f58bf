"""Lineage as AIStore's graph of nodes: GET the in/out edges of a node, POST new edges.
Edges land in the server's ``lineage`` table, next to the entries of the run's metadata.yaml
(ingest.py), so runstore and t9k clients see one lineage.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from runstore.server import db
from runstore.server.service import dumps
from runstore.server.t9k import tree
from runstore.server.t9k.routes import answer, json_body, query, read, router, write
from runstore.server.t9k.tree import T9kError


# -- graphs (lineage) -----------------------------------------------------------------------
def _graph(conn, user, node_id: str) -> dict:
    kind, row, _path = tree.locate(conn, user, node_id)
    lin = db.lineage.c
    ins: list[dict] = []
    outs: list[dict] = []
    if kind == "Run":
        for r in conn.execute(select(lin.direction, lin.artifact_id, lin.entry).where(
                lin.run_id == row.id).order_by(lin.direction, lin.position)):
            node = _linked(conn, r.artifact_id, r.entry)
            if node is not None:
                (ins if r.direction == "input" else outs).append(node)
    elif kind == "Artifact":
        for r in conn.execute(select(lin.direction, db.runs.c.id).join(
                db.runs, db.runs.c.id == lin.run_id).where(lin.artifact_id == row.id)):
            full = tree.full_row(conn, "Run", r.id)
            node = tree.describe("Run", full, f"{full.folder_path}/{full.name}")
            (ins if r.direction == "output" else outs).append(node)
    return {"in": ins, "out": outs}


def _linked(conn, artifact_id: int | None, entry: str) -> dict | None:
    if artifact_id is not None:
        full = tree.full_row(conn, "Artifact", artifact_id)
        return tree.describe("Artifact", full, f"{full.folder_path}/{full.name}")
    data = json.loads(entry)
    if data.get("kind") != "Artifact" and isinstance(data.get("id"), str):
        return {"id": data["id"], "type": data.get("kind"), "path": data.get("path")}
    return None


@router.get("/apis/v1/graphs")
@answer
async def get_graph(request: Request):
    return await read(request, _graph, query(request, "current"))


def _add_edges(conn, user, edges: Any) -> None:
    if not isinstance(edges, list) or not all(
            isinstance(e, dict) and isinstance(e.get("from"), str) and isinstance(e.get("to"), str)
            for e in edges):
        raise T9kError(400, "the body must be {\"graphs\": [{\"from\": ID, \"to\": ID}, ...]}")
    db.lock_user(conn, user.id)
    for edge in edges:
        src, dst = _maybe(conn, user, edge["from"]), _maybe(conn, user, edge["to"])
        if src is not None and src[0] == "Run" and (dst is None or dst[0] == "Artifact"):
            _link(conn, src[1], "output", dst[1] if dst else None, edge["to"])
        elif dst is not None and dst[0] == "Run" and (src is None or src[0] == "Artifact"):
            _link(conn, dst[1], "input", src[1] if src else None, edge["from"])
        elif src is None and dst is None:
            raise tree.not_found(edge["from"])
        else:
            raise T9kError(400, "an edge links a Run and an Artifact (or an asset)")


def _maybe(conn, user, node_id: str):
    try:
        kind, row, _path = tree.by_id(conn, user, node_id)
    except T9kError:
        return None
    return kind, row


def _link(conn, run, direction: str, artifact, other_id: str) -> None:
    """One lineage edge: fills in the artifact of metadata.yaml's matching entry, else adds
    an entry (idempotent)."""
    lin = db.lineage.c
    rows = conn.execute(select(lin.position, lin.artifact_id, lin.entry).where(
        lin.run_id == run.id, lin.direction == direction)).all()
    for r in rows:
        entry = json.loads(r.entry)
        same = (artifact is not None and (r.artifact_id == artifact.id or (
            entry.get("kind") == "Artifact" and entry.get("name") == artifact.alternative_name)))
        if same or (artifact is None and entry.get("id") == other_id):
            if artifact is not None and r.artifact_id != artifact.id:
                conn.execute(db.lineage.update().where(
                    lin.run_id == run.id, lin.direction == direction,
                    lin.position == r.position).values(artifact_id=artifact.id))
            return
    position = conn.execute(select(func.count()).select_from(db.lineage).where(
        lin.run_id == run.id, lin.direction == direction)).scalar_one()
    if artifact is not None:
        alt = artifact.alternative_name
        kind, entry = "Artifact", {"kind": "Artifact", "name": alt,
                                   "localDir": f".em/artifacts/{alt}"}
    else:
        kind, entry = "Asset", {"kind": "Asset", "id": other_id}
    conn.execute(db.lineage.insert().values(
        run_id=run.id, direction=direction, position=position, kind=kind,
        artifact_id=artifact.id if artifact is not None else None, entry=dumps(entry)))


@router.post("/apis/v1/graphs")
@answer
async def post_graph(request: Request):
    body = await json_body(request)
    await write(request, _add_edges, body.get("graphs") if isinstance(body, dict) else None)
    return JSONResponse({})
