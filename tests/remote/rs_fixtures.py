"""Local-store fixtures for upload tests: runs and artifacts INSERTed straight into the schema
(the same rows the SDK writes), so tests control every value, NaN and infinity included."""

from __future__ import annotations

import datetime as dt
import json
import math
import secrets
import uuid as uuidlib
from pathlib import Path

from runstore.remote import Client
from runstore.store import Store


def _alt(name: str) -> str:
    return f"{name}_{dt.datetime.now():%y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def metric_value(i: int) -> float:
    """A deterministic value per row, with NaN and infinities sprinkled in."""
    if i % 97 == 5:
        return math.nan
    if i % 101 == 7:
        return math.inf
    if i % 103 == 9:
        return -math.inf
    return i * 0.5 - 3.25


def make_run(store: Store, name: str = "run1", *, n_metrics: int = 0, status: str = "Complete",
             folder: str = "default", make_folder: bool = False, strategy: str = "new",
             run_uuid: str | None = None, hparams: dict | None = None) -> str:
    """Insert a run with n_metrics rows; returns its uuid."""
    run_uuid = run_uuid or str(uuidlib.uuid4())
    alt = _alt(name)
    start = "2024-01-02T03:04:05.123456+00:00"
    with store.write() as conn:
        conn.execute(
            "INSERT INTO runs (uuid, name, alternative_name, labels, status, start_timestamp, "
            "hparams, platform, git, local_dir, folder, make_folder, conflict_strategy, "
            "hostname) VALUES (?, ?, ?, ?, 'Running', ?, ?, ?, ?, ?, ?, ?, ?, 'testhost')",
            (run_uuid, name, alt, json.dumps(["l1"]), start,
             json.dumps(hparams or {"lr": 0.001}), json.dumps({"hostname": "testhost"}),
             json.dumps({"commit": None}), str(store.run_dir(alt)), folder, int(make_folder),
             strategy))
    add_metrics(store, run_uuid, n_metrics)
    if status != "Running":
        finish(store, run_uuid, status)
    return run_uuid


def add_metrics(store: Store, run_uuid: str, n: int, batch: int = 50_000) -> None:
    with store.write() as conn:
        run_id, base = conn.execute("SELECT id, metric_count FROM runs WHERE uuid = ?",
                                    (run_uuid,)).fetchone()
        for start in range(0, n, batch):
            conn.executemany(
                "INSERT INTO metrics (run_id, seq, type, key, step, epoch, value, timestamp) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((run_id, base + i, "train" if i % 3 else "val", f"k{i % 4}", i,
                  i // 100 if i % 2 else None, metric_value(base + i),
                  "2024-01-02T03:04:05.123456+00:00")
                 for i in range(start, min(n, start + batch))))
        conn.execute("UPDATE runs SET metric_count = ? WHERE id = ?", (base + n, run_id))


def finish(store: Store, run_uuid: str, status: str = "Complete") -> None:
    with store.write() as conn:
        conn.execute("UPDATE runs SET status = ?, end_timestamp = ? WHERE uuid = ?",
                     (status, "2024-01-02T04:00:00.000000+00:00", run_uuid))


def make_artifact(store: Store, tmp: Path, name: str = "data", *,
                  files: dict[str, bytes] | None = None) -> str:
    """Insert an artifact whose files go into the store's blobs; returns its uuid."""
    art_uuid = str(uuidlib.uuid4())
    alt = _alt(name)
    files = files if files is not None else {"a.txt": b"hello", "sub/b.bin": b"\x00\x01" * 10}
    objects = []
    for path, data in files.items():
        src = tmp / f"src-{secrets.token_hex(4)}"
        src.write_bytes(data)
        sha, size = store.put_blob_file(src)
        objects.append((path, sha, size))
    with store.write() as conn:
        art_id = conn.execute(
            "INSERT INTO artifacts (uuid, name, alternative_name, created_timestamp, local_dir)"
            " VALUES (?, ?, ?, ?, ?)", (art_uuid, name, alt, "2024-01-02T03:04:05.123456+00:00",
                                        str(store.artifact_dir(alt)))).lastrowid
        for path, sha, size in objects:
            conn.execute("INSERT OR IGNORE INTO blobs (sha256, size_bytes) VALUES (?, ?)",
                         (sha, size))
            conn.execute("INSERT INTO artifact_objects (artifact_id, path, kind, sha256, "
                         "size_bytes) VALUES (?, ?, 'file', ?, ?)", (art_id, path, sha, size))
        conn.execute("INSERT INTO artifact_objects (artifact_id, path, kind, uri) VALUES "
                     "(?, 'ref', 'reference', 's3://bucket/x')", (art_id,))
    return art_uuid


def link(store: Store, run_uuid: str, art_uuid: str, direction: str) -> None:
    with store.write() as conn:
        run_id = conn.execute("SELECT id FROM runs WHERE uuid = ?", (run_uuid,)).fetchone()[0]
        art_id, alt, local = conn.execute(
            "SELECT id, alternative_name, local_dir FROM artifacts WHERE uuid = ?",
            (art_uuid,)).fetchone()
        pos = conn.execute("SELECT COUNT(*) FROM associations WHERE run_id = ? AND "
                           "direction = ?", (run_id, direction)).fetchone()[0]
        conn.execute("INSERT INTO associations (run_id, direction, position, kind, "
                     "artifact_id, entry) VALUES (?, ?, ?, 'Artifact', ?, ?)",
                     (run_id, direction, pos, art_id,
                      json.dumps({"kind": "Artifact", "name": alt, "localDir": local})))


def local_rows(store: Store, run_uuid: str) -> list[tuple]:
    return [tuple(r) for r in store.read(
        "SELECT m.type, m.key, m.step, m.epoch, m.value, m.timestamp FROM metrics m "
        "JOIN runs r ON r.id = m.run_id WHERE r.uuid = ? ORDER BY m.seq", (run_uuid,))]


def server_rows(client: Client, run_uuid: str) -> list[tuple]:
    """Every metric row the server holds of a run, decoded (NaN as None)."""
    out, offset = [], 0
    while True:
        page = client.request("GET", f"/runs/{run_uuid}/metrics",
                              params={"offset": offset, "limit": 50_000})
        for t, k, step, epoch, v, ts in page["rows"]:
            v = {"NaN": None, "Infinity": math.inf, "-Infinity": -math.inf}[v] \
                if isinstance(v, str) else float(v)
            out.append((t, k, step, epoch, v, ts))
        if not page["rows"]:
            return out
        offset = page["offset"]


def same_rows(a: list[tuple], b: list[tuple]) -> bool:
    """Equal row lists, NaN (None) equal to NaN."""
    return len(a) == len(b) and all(
        x[:4] == y[:4] and x[5] == y[5] and (x[4] == y[4] or (x[4] is None and y[4] is None))
        for x, y in zip(a, b, strict=True))
