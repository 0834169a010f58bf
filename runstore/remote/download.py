"""The read side: listing a remote folder, downloading a run or artifact into the local store."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any

from runstore import syncstate
from runstore.errors import InvalidInputError, NotFoundError, PermanentRemoteError
from runstore.protocol import decode_value
from runstore.remote.client import Client
from runstore.rules import check_object_path, check_sha256
from runstore.store import Store
from runstore.timeutil import now_iso

LIST_KEYS = ("name", "alternative_name", "uuid", "status", "start_timestamp", "end_timestamp",
             "labels", "path", "complete")
PAGE_ROWS = 50_000


@contextlib.contextmanager
def _client(client: Client | None):
    if client is not None:
        yield client
        return
    own = Client.from_config()
    try:
        yield own
    finally:
        own.close()


def list_remote(folder: str | None = None, client: Client | None = None) -> list[dict]:
    """Runs in a remote folder (None: all the user's runs), as dicts with LIST_KEYS."""
    with _client(client) as c:
        if folder is None:
            nodes = c.request("GET", "/runs")
        else:
            path = c.folder_path(folder)
            nodes = [n for n in c.request("GET", f"/folders{path}")["nodes"]
                     if n["kind"] == "Run"]
    return [{k: n[k] for k in LIST_KEYS} for n in nodes]


def _resolve(client: Client, path: str, kind: str) -> str:
    full = path if path.startswith("/") else f"/{client.user}/{path}"
    try:
        node = client.request("GET", "/resolve", params={"path": full})
    except PermanentRemoteError as exc:
        if exc.status_code in (404, 422):
            raise NotFoundError(f"no {kind.lower()} {full} on {client.host}") from exc
        raise
    if node["kind"] != kind:
        raise NotFoundError(f"{full} on {client.host} is a {node['kind']}, not a {kind}")
    return node["uuid"]


def _history(conn, entity: str, uuid: str, client: Client, path: str) -> None:
    conn.execute("INSERT INTO remote_history (entity, entity_uuid, action, timestamp, host, "
                 "path, remote_id) VALUES (?, ?, 'download', ?, ?, ?, ?)",
                 (entity, uuid, now_iso(), client.host, path, uuid))


def fetch_blob(client: Client, store: Store, sha: str) -> None:
    """Download a blob into the local store, verifying its sha256 before it gets its name."""
    if store.has_blob(sha):
        return
    tmp_dir = store.blobs_dir / "tmp"
    tmp_dir.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="download-")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                out.write(chunk)
            client.stream_to(f"/blobs/{sha}", sink)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha:
            raise PermanentRemoteError(f"blob {sha} from {client.host} has the wrong sha256")
        final = store.blob_path(sha)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def download_artifact(store: Store, path: str, client: Client) -> str:
    """Download the artifact at a remote path (metadata, objects, blobs); returns its uuid."""
    return _download_artifact_uuid(store, _resolve(client, path, "Artifact"), client)


def _download_artifact_uuid(store: Store, uuid: str, client: Client) -> str:
    if store.read("SELECT 1 FROM artifacts WHERE uuid = ?", (uuid,)):
        return uuid
    detail = client.request("GET", f"/artifacts/{uuid}")
    for obj in detail["objects"]:
        try:
            check_object_path(obj["path"])
            if obj["kind"] == "file":
                check_sha256(obj["sha256"])
        except InvalidInputError as exc:
            raise PermanentRemoteError(f"artifact {detail['path']}: {exc}") from exc
    for obj in detail["objects"]:
        if obj["kind"] == "file":
            fetch_blob(client, store, obj["sha256"])
    meta = detail["metadata"]
    local_dir = store.artifact_dir(detail["alternative_name"])
    local_dir.mkdir(parents=True, exist_ok=True)
    with store.write() as conn:
        if conn.execute("SELECT 1 FROM artifacts WHERE uuid = ?", (uuid,)).fetchone():
            return uuid
        art_id = conn.execute(
            "INSERT INTO artifacts (uuid, name, alternative_name, labels, description, "
            "created_timestamp, local_dir) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uuid, detail["name"], detail["alternative_name"], json.dumps(meta["labels"]),
             meta["description"], meta["created_timestamp"], str(local_dir))).lastrowid
        for obj in detail["objects"]:
            if obj["kind"] == "file":
                conn.execute("INSERT OR IGNORE INTO blobs (sha256, size_bytes) VALUES (?, ?)",
                             (obj["sha256"], obj["size_bytes"]))
            conn.execute(
                "INSERT INTO artifact_objects (artifact_id, path, kind, sha256, size_bytes, uri)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (art_id, obj["path"], obj["kind"], obj["sha256"], obj["size_bytes"],
                 obj["uri"]))
        _history(conn, "artifact", uuid, client, detail["path"])
    return uuid


def _decode(value: Any) -> float | None:
    """A wire value (protocol's codec) as stored locally: NaN is NULL."""
    number = decode_value(value)
    return None if number != number else number


def download_run(store: Store, path: str, client: Client) -> str:
    """Download the run at a remote path (metadata, metrics, its artifacts, lineage) into the
    local store; returns its uuid. A run already in the store is left as it is."""
    uuid = _resolve(client, path, "Run")
    if store.read("SELECT 1 FROM runs WHERE uuid = ?", (uuid,)):
        return uuid
    detail = client.request("GET", f"/runs/{uuid}")
    for art_uuid in detail["artifacts"]:
        _download_artifact_uuid(store, art_uuid, client)
    meta = detail["metadata"]
    local_dir = store.run_dir(detail["alternative_name"])
    local_dir.mkdir(parents=True, exist_ok=True)
    # One transaction: a half-downloaded run is never visible locally.
    with store.write() as conn:
        if conn.execute("SELECT 1 FROM runs WHERE uuid = ?", (uuid,)).fetchone():
            return uuid
        run_id = conn.execute(
            "INSERT INTO runs (uuid, name, alternative_name, labels, description, status, "
            "start_timestamp, end_timestamp, hparams, platform, git, local_dir, folder, "
            "hostname, generation, metric_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (uuid, detail["name"], detail["alternative_name"], json.dumps(meta["labels"]),
             meta["description"], meta["status"], meta["start_timestamp"],
             meta["end_timestamp"], json.dumps(meta["hparams"]), json.dumps(meta["platform"]),
             json.dumps(meta["git"]), str(local_dir), detail["folder"],
             str(meta["platform"].get("hostname") or "unknown"),
             # the server's generation: a re-open here continues after it, never before
             meta.get("generation", 0))).lastrowid
        offset = 0
        while offset < detail["metric_count"]:
            page = client.request("GET", f"/runs/{uuid}/metrics",
                                  params={"offset": offset, "limit": PAGE_ROWS})
            if not page["rows"]:
                break
            conn.executemany(
                "INSERT INTO metrics (run_id, seq, type, key, step, epoch, value, timestamp) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, offset + i, r[0], r[1], r[2], r[3], _decode(r[4]), r[5])
                 for i, r in enumerate(page["rows"])])
            offset = page["offset"]
        conn.execute("UPDATE runs SET metric_count = ? WHERE id = ?", (offset, run_id))
        for direction in ("input", "output"):
            for position, item in enumerate(detail["lineage"][direction]):
                art = None
                if item["artifact_uuid"]:
                    row = conn.execute("SELECT id FROM artifacts WHERE uuid = ?",
                                       (item["artifact_uuid"],)).fetchone()
                    art = row[0] if row else None
                conn.execute(
                    "INSERT INTO associations (run_id, direction, position, kind, artifact_id,"
                    " entry) VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, direction, position, item["kind"], art, json.dumps(item["entry"])))
        # The server's generation, set last: the associations inserted above count as
        # edits of an ended run (a schema trigger) and moved it on.
        conn.execute("UPDATE runs SET generation = ? WHERE id = ?",
                     (meta.get("generation", 0), run_id))
        if meta["status"] != "Running":
            # This copy is what the server holds: in sync, so a change made to it here
            # (an edit, load_run) makes it pending like any synced run.
            syncstate.mark_synced(conn, uuid, detail["path"], offset)
        _history(conn, "run", uuid, client, detail["path"])
    return uuid
