"""The server's side of the chain oracle (tests/reliability/chain.py) when the server runs on
PostgreSQL + a bucket: the same queries as chain.read_server, the same dict, read from
PostgreSQL in one REPEATABLE READ snapshot; and a blob's sha256 and size as stored in the
bucket. final_check(..., server=..., server_blob=...) then applies its unchanged set logic.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from tests.reliability.chain import ROWS_SQL, STDOUT_SQL, USER, _meta, _wants


def read_server_pg(url: str, with_rows: bool | set[str] = True, user: str = USER,
                   only: set[str] | None = None) -> dict[str, Any]:
    """chain.read_server over PostgreSQL. only: the uuids of one uploader's store (the other
    stores' runs share the user); None for all of them."""
    import psycopg

    pg = ROWS_SQL.replace("?", "%s")
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        owner = conn.execute("SELECT id FROM users WHERE name = %s", (user,)).fetchone()[0]
        runs: dict[str, list[dict[str, Any]]] = {}
        for rid, uuid, node, folder, status, count, complete, *meta in conn.execute(
                "SELECT r.id, r.uuid, r.name, f.path, r.status, r.metric_count, r.complete, "
                "r.description, r.labels, r.hparams "
                "FROM runs r JOIN folders f ON f.id = r.folder_id WHERE r.owner_id = %s",
                (owner,)).fetchall():
            if only is not None and uuid not in only:
                continue
            n_rows = conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = %s",
                                  (rid,)).fetchone()[0]
            rows = ([tuple(r) for r in conn.execute(pg + " ORDER BY seq", (rid,)).fetchall()]
                    if _wants(with_rows, uuid) else None)
            lineage = [u for (u,) in conn.execute(
                "SELECT a.uuid FROM lineage l JOIN artifacts a ON a.id = l.artifact_id "
                "WHERE l.run_id = %s ORDER BY l.direction, l.position", (rid,)).fetchall()]
            n_lineage = conn.execute("SELECT COUNT(*) FROM lineage WHERE run_id = %s",
                                     (rid,)).fetchone()[0]
            stdout = conn.execute(STDOUT_SQL.replace("?", "%s"), (rid,)).fetchone()
            runs.setdefault(uuid, []).append({
                "node": node, "folder": folder, "status": status, "metric_count": count,
                "complete": bool(complete), "rows": rows, "n_rows": n_rows, "artifacts": lineage,
                "lineage": n_lineage, "meta": _meta(*meta),
                "stdout": tuple(stdout) if stdout else None})
        artifacts: dict[str, list[list[tuple]]] = {}
        for aid, uuid in conn.execute("SELECT id, uuid FROM artifacts WHERE owner_id = %s",
                                      (owner,)).fetchall():
            artifacts.setdefault(uuid, []).append([tuple(r) for r in conn.execute(
                "SELECT path, kind, sha256, size_bytes FROM artifact_objects "
                "WHERE artifact_id = %s ORDER BY path", (aid,)).fetchall()])
        nodes = Counter(tuple(r) for r in conn.execute(
            "SELECT f.path, r.name FROM runs r JOIN folders f ON f.id = r.folder_id "
            "WHERE r.owner_id = %s", (owner,)).fetchall())
    return {"runs": runs, "artifacts": artifacts, "nodes": nodes}


def bucket_blob(store, prefix: str):
    """A server_blob function for final_check: (sha256 of the stored bytes, size) of
    <prefix>/blobs/ab/<sha> in the bucket, (None, 0) when absent."""
    import obstore

    def check(sha: str) -> tuple[str | None, int]:
        try:
            data = obstore.get(store, f"{prefix}/blobs/{sha[:2]}/{sha}".lstrip("/")).bytes()
        except FileNotFoundError:
            return None, 0
        except Exception as exc:  # obstore's NotFoundError is not a FileNotFoundError
            if type(exc).__name__ == "NotFoundError":
                return None, 0
            raise
        raw = bytes(data)
        return hashlib.sha256(raw).hexdigest(), len(raw)

    return check
