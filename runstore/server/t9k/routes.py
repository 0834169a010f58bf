"""HTTP routes of the t9k compatibility API (mounted under t9k.PREFIX).

The bodies and status codes are those t9k 0.6's client.py sends and parses. Errors are plain
text (the client matches substrings of ``resp.text``), never runstore's JSON error shape.
Query parameters are read by hand, so FastAPI never answers with its own 422 JSON.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

from runstore.server import db
from runstore.server.errors import ServiceError
from runstore.server.paths import BadPath, check_object_path
from runstore.server.service import dumps
from runstore.server.t9k import ingest, render, tree
from runstore.server.t9k.tree import T9kError

router = APIRouter()
UPLOAD_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_PARTS = 10_000


def _answer(fn):
    """Turn T9kError (and the shared service errors) into the plain-text answers t9k parses."""
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except T9kError as exc:
            return PlainTextResponse(exc.text, status_code=exc.status)
        except ServiceError as exc:
            if exc.status_code == 403:
                return PlainTextResponse("permission denied", status_code=403)
            return PlainTextResponse(str(exc), status_code=exc.status_code)
    return wrapper


def _q(request: Request, name: str, default: str | None = None) -> str:
    value = request.query_params.get(name, default)
    if value is None:
        raise T9kError(400, f"missing query parameter {name}")
    return value


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise T9kError(400, f"{name} must be an integer, not {str(raw)[:20]!r}") from None
    if not low <= value <= high:
        raise T9kError(400, f"{name} must be between {low} and {high}")
    return value


def _db(request: Request) -> db.Database:
    return request.app.state.database


def _read(request: Request, fn, *args):
    def run():
        with _db(request).read() as conn:
            return fn(conn, request.state.user, *args)
    return run_in_threadpool(run)


def _write(request: Request, fn, *args):
    def run():
        with _db(request).write() as conn:
            return fn(conn, request.state.user, *args)
    return run_in_threadpool(run)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise T9kError(400, "the body must be JSON") from None


# -- who am I, nodes ------------------------------------------------------------------------
@router.get("/oauth2/userinfo")
@_answer
async def userinfo(request: Request):
    name = request.state.user.name
    return {"preferred_username": name, "name": name, "sub": name}


@router.get("/apis/v1/nodes")
@_answer
async def list_nodes(request: Request):
    parent = _q(request, "parent")
    kind = request.query_params.get("type") or None
    page = _int(request, "page", 1, 1, 1 << 31)
    size = _int(request, "size", 100, 1, 1000)
    nodes = await _read(request, tree.children, parent, kind)
    return _page(nodes, page, size)


def _page(items: list, page: int, size: int) -> dict:
    return {"data": items[(page - 1) * size:page * size],
            "pagination": {"page": page, "size": size, "total": len(items)}}


@router.get("/apis/v1/nodes/info")
@_answer
async def node_info(request: Request):
    node = _q(request, "node")
    kind, row, path = await _read(request, tree.locate, node)
    return tree.describe(kind, row, path)


@router.post("/apis/v1/nodes")
@_answer
async def create_node(request: Request):
    body = await _json_body(request)
    return {"id": await _write(request, tree.create, body)}


@router.delete("/apis/v1/nodes")
@_answer
async def delete_node(request: Request):
    body = await _json_body(request)
    node = body.get("node") if isinstance(body, dict) else None
    await _write(request, tree.delete, node)
    return {}


# -- objects --------------------------------------------------------------------------------
def _split_key(conn, user, path: str) -> tuple[str, Any, str, str]:
    kind, row, node_path, key = tree.split_object(conn, user, path)
    if kind not in ("Run", "Artifact"):
        raise T9kError(400, f"objects belong to a Run or an Artifact, not {node_path}")
    try:
        check_object_path(key)
    except BadPath as exc:
        raise T9kError(400, str(exc)) from None
    return kind, row, node_path, key


def _parsed(kind: str, key: str) -> bool:
    if kind == "Run":
        return ingest.is_parsed_run_file(key)
    return key in ingest.PARSED_ARTIFACT_FILES


def _hash_file(fh) -> tuple[str, int]:
    fh.seek(0)
    digest, size = hashlib.sha256(), 0
    while block := fh.read(1 << 20):
        digest.update(block)
        size += len(block)
    fh.seek(0)
    return digest.hexdigest(), size


async def _put_blob(request: Request, fh, sha: str, size: int) -> None:
    """The file's bytes into the server's blob store (owned by the uploading user)."""
    blobs = request.app.state.blobs
    user_id = request.state.user.id
    status = await run_in_threadpool(blobs.status, user_id, sha, size)
    if status.complete:
        return
    await run_in_threadpool(fh.seek, status.offset)

    async def chunks():
        while block := await run_in_threadpool(fh.read, 1 << 20):
            yield block
    await blobs.write(user_id, sha, size, status.offset, chunks())


async def _store(request: Request, path: str, fh) -> dict:
    """Store an uploaded object: parsed into the tables, or kept as a blob."""
    kind, _row, _node_path, key = await _read(request, _split_key, path)
    sha, size = await run_in_threadpool(_hash_file, fh)
    if _parsed(kind, key):
        data = await run_in_threadpool(fh.read)
        await _write(request, _ingest, path, data)
    else:
        await _put_blob(request, fh, sha, size)
        await _write(request, _record, path, sha, size)
    return {"path": key, "path_type": "object", "size_bytes": size}


def _ingest(conn, user, path: str, data: bytes) -> None:
    db.lock_user(conn, user.id)
    kind, row, _node_path, key = _split_key(conn, user, path)
    if kind == "Run":
        ingest.ingest_run_file(conn, row, key, data)
    else:
        ingest.ingest_artifact_file(conn, row, key, data)


def _record(conn, user, path: str, sha: str, size: int) -> None:
    db.lock_user(conn, user.id)
    kind, row, _node_path, key = _split_key(conn, user, path)
    if kind == "Run":
        ingest.record_run_file(conn, row, key, sha, size)
    else:
        ingest.record_artifact_file(conn, row, key, sha, size)


async def _form_file(request: Request) -> UploadFile:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # malformed multipart bodies raise several types
        raise T9kError(400, "the body must be a multipart form with a file 'content': "
                       f"{exc}") from None
    content = form.get("content")
    if not isinstance(content, UploadFile):
        raise T9kError(400, "the body must be a multipart form with a file 'content'")
    return content


@router.post("/apis/v1/objects")
@_answer
async def upload_object(request: Request):
    path = _q(request, "path")
    content = await _form_file(request)
    try:
        return await _store(request, path, content.file)
    finally:
        await content.close()


def _objects(conn, user, node_path: str) -> tuple[str, Any, dict]:
    kind, row, path = tree.locate(conn, user, node_path)
    if kind == "Folder":
        raise T9kError(400, f"a Folder has no objects: {path}")
    files = render.run_files(conn, row) if kind == "Run" else render.artifact_files(conn, row)
    return kind, row, files


@router.get("/apis/v1/objects/ls")
@_answer
async def list_objects(request: Request):
    node_path = _q(request, "path")
    page = _int(request, "page", 1, 1, 1 << 31)
    size = _int(request, "size", 1000, 1, 1000)
    _kind, _row, files = await _read(request, _objects, node_path)
    items = [{"path": k, "path_type": "object", "size_bytes": render.size_of(v)}
             for k, v in sorted(files.items())]
    return _page(items, page, size)


def _object(conn, user, path: str) -> Any:
    _kind, _row, node_path, key = _split_key(conn, user, path)
    _k, _r, files = _objects(conn, user, node_path)
    if key not in files:
        raise T9kError(404, f"object not found [{path}]")
    return files[key]


@router.get("/apis/v1/objects")
@_answer
async def get_object(request: Request):
    path = _q(request, "path")
    obj = await _read(request, _object, path)
    if isinstance(obj, bytes):
        return Response(obj, media_type="application/octet-stream")
    blob = request.app.state.blobs.path(obj[1])
    if not blob.exists():
        raise T9kError(404, f"object not found [{path}]")
    return FileResponse(blob, media_type="application/octet-stream")


# -- multipart uploads (files over 100 MiB) --------------------------------------------------
def _upload_dir(request: Request, upload_id: str) -> Path:
    if not UPLOAD_ID_RE.fullmatch(upload_id):
        raise T9kError(404, f"upload not found [{upload_id[:40]}]")
    root: Path = request.app.state.t9k_multipart
    return root / f"{request.state.user.id}-{upload_id}"


@router.post("/apis/v1/objects/multipart")
@_answer
async def start_multipart(request: Request):
    path = _q(request, "path")
    await _read(request, _split_key, path)  # the node must exist now
    upload_id = str(uuid.uuid4())
    where = _upload_dir(request, upload_id)
    where.mkdir(parents=True)
    (where / "path").write_text(path)
    return {"uploadId": upload_id}


def _pending(request: Request, upload_id: str, path: str) -> Path:
    where = _upload_dir(request, upload_id)
    try:
        started_for = (where / "path").read_text()
    except OSError:
        raise T9kError(404, f"upload not found [{upload_id}]") from None
    if started_for != path:
        raise T9kError(400, f"upload {upload_id} is for {started_for}, not {path}")
    return where


@router.put("/apis/v1/objects/multipart/{upload_id}")
@_answer
async def upload_part(request: Request, upload_id: str):
    path = _q(request, "path")
    number = _int(request, "partNumber", 0, 1, MAX_PARTS)
    where = _pending(request, upload_id, path)
    content = await _form_file(request)
    try:
        etag = await run_in_threadpool(_save_part, content.file, where, number)
    finally:
        await content.close()
    return {"eTag": etag}


def _save_part(src, where: Path, number: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    fd, tmp = tempfile.mkstemp(dir=where, prefix="part-")
    with os.fdopen(fd, "wb") as out:
        while block := src.read(1 << 20):
            digest.update(block)
            out.write(block)
    os.replace(tmp, where / f"{number:05d}.part")
    return digest.hexdigest()


@router.post("/apis/v1/objects/multipart/{upload_id}")
@_answer
async def complete_multipart(request: Request, upload_id: str):
    path = _q(request, "path")
    where = _pending(request, upload_id, path)
    body = await _json_body(request)
    parts = body.get("parts") if isinstance(body, dict) else None
    if not isinstance(parts, list) or not parts:
        raise T9kError(400, "the body must be {\"parts\": [{\"etag\", \"partNumber\"}, ...]}")
    fd, joined = tempfile.mkstemp(dir=where, prefix="joined-")
    try:
        with os.fdopen(fd, "w+b") as out:
            await run_in_threadpool(_join_parts, where, parts, out)
            result = await _store(request, path, out)
    finally:
        await run_in_threadpool(shutil.rmtree, where, True)
    return result


def _join_parts(where: Path, parts: list, out) -> None:
    numbers = []
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("partNumber"), int):
            raise T9kError(400, "each part must be {\"etag\": ..., \"partNumber\": N}")
        numbers.append(part["partNumber"])
    if numbers != sorted(set(numbers)):
        raise T9kError(400, "parts must be listed once each, in order")
    for part in parts:
        name = where / f"{part['partNumber']:05d}.part"
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with name.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
        except OSError:
            raise T9kError(400, f"part {part['partNumber']} was not uploaded") from None
        if digest.hexdigest() != part.get("etag"):
            raise T9kError(400, f"part {part['partNumber']}: etag does not match its bytes")
    out.flush()


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
            full = tree._full_row(conn, "Run", r.id)
            node = tree.describe("Run", full, f"{full.folder_path}/{full.name}")
            (ins if r.direction == "output" else outs).append(node)
    return {"in": ins, "out": outs}


def _linked(conn, artifact_id: int | None, entry: str) -> dict | None:
    if artifact_id is not None:
        full = tree._full_row(conn, "Artifact", artifact_id)
        return tree.describe("Artifact", full, f"{full.folder_path}/{full.name}")
    data = json.loads(entry)
    if data.get("kind") != "Artifact" and isinstance(data.get("id"), str):
        return {"id": data["id"], "type": data.get("kind"), "path": data.get("path")}
    return None


@router.get("/apis/v1/graphs")
@_answer
async def get_graph(request: Request):
    return await _read(request, _graph, _q(request, "current"))


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
@_answer
async def post_graph(request: Request):
    body = await _json_body(request)
    await _write(request, _add_edges, body.get("graphs") if isinstance(body, dict) else None)
    return JSONResponse({})
