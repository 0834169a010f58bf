"""HTTP routes of the t9k compatibility API (mounted under t9k.PREFIX): the shared request
helpers, who-am-I and the node tree. objects.py and graphs.py add their routes to ``router``.

The bodies and status codes are those t9k 0.6's client.py sends and parses. Errors are plain
text (the client matches substrings of ``resp.text``), never runstore's JSON error shape.
Query parameters are read by hand, so FastAPI never answers with its own 422 JSON.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from runstore.server import db
from runstore.server.errors import ServiceError
from runstore.server.t9k import tree
from runstore.server.t9k.tree import T9kError

router = APIRouter()


def answer(fn):
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


def query(request: Request, name: str, default: str | None = None) -> str:
    value = request.query_params.get(name, default)
    if value is None:
        raise T9kError(400, f"missing query parameter {name}")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise T9kError(400, f"{name} must be an integer, not {str(raw)[:20]!r}") from None
    if not low <= value <= high:
        raise T9kError(400, f"{name} must be between {low} and {high}")
    return value


def database(request: Request) -> db.Database:
    return request.app.state.database


def read(request: Request, fn, *args):
    def run():
        with database(request).read() as conn:
            return fn(conn, request.state.user, *args)
    return run_in_threadpool(run)


def write(request: Request, fn, *args):
    def run():
        with database(request).write() as conn:
            return fn(conn, request.state.user, *args)
    return run_in_threadpool(run)


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise T9kError(400, "the body must be JSON") from None


# -- who am I, nodes ------------------------------------------------------------------------
@router.get("/oauth2/userinfo")
@answer
async def userinfo(request: Request):
    name = request.state.user.name
    return {"preferred_username": name, "name": name, "sub": name}


@router.get("/apis/v1/nodes")
@answer
async def list_nodes(request: Request):
    parent = query(request, "parent")
    kind = request.query_params.get("type") or None
    page = query_int(request, "page", 1, 1, 1 << 31)
    size = query_int(request, "size", 100, 1, 1000)
    nodes = await read(request, tree.children, parent, kind)
    return paginate(nodes, page, size)


def paginate(items: list, page: int, size: int) -> dict:
    return {"data": items[(page - 1) * size:page * size],
            "pagination": {"page": page, "size": size, "total": len(items)}}


@router.get("/apis/v1/nodes/info")
@answer
async def node_info(request: Request):
    node = query(request, "node")
    kind, row, path = await read(request, tree.locate, node)
    return tree.describe(kind, row, path)


@router.post("/apis/v1/nodes")
@answer
async def create_node(request: Request):
    body = await json_body(request)
    return {"id": await write(request, tree.create, body)}


@router.delete("/apis/v1/nodes")
@answer
async def delete_node(request: Request):
    body = await json_body(request)
    node = body.get("node") if isinstance(body, dict) else None
    await write(request, tree.delete, node)
    return {}
