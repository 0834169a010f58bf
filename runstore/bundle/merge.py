"""Merging a verified bundle into a store: one transaction, idempotent, order-free.

Runs are matched by UUID. Metric rows are keyed by (run, seq), so a row carried twice is kept
once and rows may arrive before the rows in front of them (a bundle delivered out of order):
the store then holds a run with a hole, which :func:`readiness` reports and the importer does
not upload until the hole is filled. A run's metadata and lineage are taken from the newest
bundle (by generation, then the source's sequence number); an older one never overwrites it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from runstore.bundle.format import RECORDS, BundleCorruptError, Manifest
from runstore.store import BUSY_TIMEOUT_MS, Store
from runstore.timeutil import now_iso

# Metadata a newer bundle brings (not id, uuid, alternative_name, local_dir, pid...).
_META = ("name", "labels", "description", "status", "start_timestamp", "end_timestamp",
         "hparams", "platform", "git", "folder", "make_folder", "conflict_strategy",
         "auto_upload", "metric_count")
_RUN_INSERT = ("uuid", "alternative_name", "local_dir", "hostname") + _META


def _connect(store: Store, records: Path) -> sqlite3.Connection:
    """A connection to the store with the bundle's records attached read-only."""
    conn = sqlite3.connect(f"file:{quote(str(store.db_path))}", uri=True,
                           timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("ATTACH DATABASE ? AS b",
                 (f"file:{quote(str(records))}?mode=ro&immutable=1",))
    return conn


def check_records(records: Path) -> None:
    """Raise sqlite3.DatabaseError unless records.sqlite is a database with the tables a
    merge reads (checked before any blob is copied, so a bad file writes nothing)."""
    conn = sqlite3.connect(f"file:{quote(str(records))}?mode=ro&immutable=1", uri=True)
    try:
        for table in ("runs", "metrics", "artifacts", "artifact_objects", "blobs",
                      "associations", "remote_history"):
            conn.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()
    finally:
        conn.close()


def copy_blobs(store: Store, bundle: Path, manifest: Manifest) -> None:
    """Blobs into the store (content-addressed: a blob already there is not copied again)."""
    for name, info in sorted(manifest.files.items()):
        if not name.startswith("blobs/") or store.has_blob(info["sha256"]):
            continue
        sha, _ = store.put_blob_file(bundle / name)
        if sha != info["sha256"]:  # changed since verify(): refuse rather than keep it
            os.unlink(store.blob_path(sha))
            raise BundleCorruptError(f"{bundle / name} changed while it was imported. Try: "
                                     "import the bundle again.")


def merge(store: Store, bundle: Path, manifest: Manifest) -> bool:
    """Merge the bundle's rows into the store; False if this bundle was merged before."""
    conn = _connect(store, bundle / RECORDS)
    try:
        Store._retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            done = conn.execute("SELECT 1 FROM main.bundle_imports WHERE bundle_id = ?",
                                (manifest.bundle_id,)).fetchone()
            if done is None:
                _merge_rows(conn, store, manifest)
                conn.execute(
                    "INSERT INTO main.bundle_imports (bundle_id, source_store, sequence, "
                    "imported_at, source_path, run_count) VALUES (?, ?, ?, ?, ?, ?)",
                    (manifest.bundle_id, manifest.source_store, manifest.sequence, now_iso(),
                     str(bundle), len(manifest.runs)))
            Store._retry_locked(lambda: conn.execute("COMMIT"))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return done is None
    finally:
        conn.close()


def _free_name(conn: sqlite3.Connection, table: str, alt: str, uuid: str) -> str:
    """The alternative name, unless another entity of this store holds it already."""
    row = conn.execute(f"SELECT uuid FROM main.{table} WHERE alternative_name = ?",
                       (alt,)).fetchone()
    return alt if row is None or row[0] == uuid else f"{alt}-{uuid[:8]}"


def _merge_artifacts(conn: sqlite3.Connection, store: Store) -> None:
    for art in conn.execute("SELECT * FROM b.artifacts").fetchall():
        if conn.execute("SELECT 1 FROM main.artifacts WHERE uuid = ?",
                        (art["uuid"],)).fetchone():
            continue
        alt = _free_name(conn, "artifacts", art["alternative_name"], art["uuid"])
        conn.execute("INSERT INTO main.artifacts (uuid, name, alternative_name, labels, "
                     "description, created_timestamp, local_dir) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (art["uuid"], art["name"], alt, art["labels"], art["description"],
                      art["created_timestamp"], str(store.artifact_dir(alt))))
    conn.execute("INSERT OR IGNORE INTO main.blobs (sha256, size_bytes, created_at) "
                 "SELECT sha256, size_bytes, created_at FROM b.blobs")
    conn.execute(
        "INSERT OR IGNORE INTO main.artifact_objects (artifact_id, path, kind, sha256, "
        "size_bytes, uri) SELECT ma.id, o.path, o.kind, o.sha256, o.size_bytes, o.uri "
        "FROM b.artifact_objects o JOIN b.artifacts ba ON ba.id = o.artifact_id "
        "JOIN main.artifacts ma ON ma.uuid = ba.uuid")


def _merge_rows(conn: sqlite3.Connection, store: Store, manifest: Manifest) -> None:
    _merge_artifacts(conn, store)
    for run in conn.execute("SELECT * FROM b.runs").fetchall():
        target = conn.execute("SELECT id, generation FROM main.runs WHERE uuid = ?",
                              (run["uuid"],)).fetchone()
        if target is None:
            alt = _free_name(conn, "runs", run["alternative_name"], run["uuid"])
            values = {c: run[c] for c in _RUN_INSERT}
            values.update(alternative_name=alt, local_dir=str(store.run_dir(alt)))
            # No pid: no process of this store's owns the run, so no reaper marks it dead.
            run_id = conn.execute(
                f"INSERT INTO main.runs ({', '.join(_RUN_INSERT)}) VALUES "
                f"({', '.join('?' * len(_RUN_INSERT))})", tuple(values.values())).lastrowid
            newer, generation = True, run["generation"]
        else:
            run_id = target["id"]
            origin = conn.execute("SELECT sequence FROM main.bundle_run_origin WHERE run_id = ?",
                                  (run_id,)).fetchone()
            held = (target["generation"], origin[0] if origin else -1)
            newer = (run["generation"], manifest.sequence) > held
            generation = max(run["generation"], target["generation"])
            if newer:
                conn.execute(f"UPDATE main.runs SET {', '.join(f'{c} = ?' for c in _META)} "
                             "WHERE id = ?", (*[run[c] for c in _META], run_id))
        inserted = conn.execute(
            "INSERT OR IGNORE INTO main.metrics (run_id, seq, type, key, step, epoch, value, "
            "timestamp) SELECT ?, seq, type, key, step, epoch, value, timestamp "
            "FROM b.metrics WHERE run_id = ?", (run_id, run["id"])).rowcount
        if newer:
            conn.execute("DELETE FROM main.associations WHERE run_id = ?", (run_id,))
            conn.execute(
                "INSERT INTO main.associations (run_id, direction, position, kind, artifact_id,"
                " entry) SELECT ?, a.direction, a.position, a.kind, ma.id, a.entry "
                "FROM b.associations a LEFT JOIN b.artifacts ba ON ba.id = a.artifact_id "
                "LEFT JOIN main.artifacts ma ON ma.uuid = ba.uuid WHERE a.run_id = ?",
                (run_id, run["id"]))
            conn.execute("INSERT INTO main.bundle_run_origin (run_id, source_store, sequence) "
                         "VALUES (?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                         "source_store = excluded.source_store, sequence = excluded.sequence",
                         (run_id, manifest.source_store, manifest.sequence))
        # The store's triggers count an edit of an ended run as a new generation; here the
        # generation is the source's, carried as it is.
        conn.execute("UPDATE main.runs SET generation = ? WHERE id = ?", (generation, run_id))
        if (newer or inserted) and run["status"] != "Running":
            conn.execute(
                "INSERT INTO main.sync_state (run_id, state) VALUES (?, 'pending') "
                "ON CONFLICT (run_id) DO UPDATE SET state = 'pending', next_attempt_at = NULL,"
                " last_error = NULL", (run_id,))
    conn.execute(
        "INSERT INTO main.remote_history (entity, entity_uuid, action, timestamp, host, path, "
        "remote_id) SELECT h.entity, h.entity_uuid, h.action, h.timestamp, h.host, h.path, "
        "h.remote_id FROM b.remote_history h WHERE NOT EXISTS (SELECT 1 FROM "
        "main.remote_history m WHERE m.entity_uuid = h.entity_uuid AND m.action = h.action "
        "AND m.timestamp = h.timestamp AND m.host = h.host AND m.path = h.path)")


def readiness(store: Store, run_uuid: str) -> str | None:
    """None if the run's rows and blobs are all here, else why it must wait."""
    run = store.read("SELECT id, metric_count FROM runs WHERE uuid = ?", (run_uuid,))[0]
    count, end = store.read("SELECT COUNT(*), COALESCE(MAX(seq) + 1, 0) FROM metrics "
                            "WHERE run_id = ?", (run["id"],))[0]
    if count != end or end < run["metric_count"]:
        first = 0
        if store.read("SELECT 1 FROM metrics WHERE run_id = ? AND seq = 0", (run["id"],)):
            first = store.read(
                "SELECT MIN(seq) + 1 FROM metrics m WHERE run_id = ? AND NOT EXISTS (SELECT 1 "
                "FROM metrics n WHERE n.run_id = m.run_id AND n.seq = m.seq + 1)",
                (run["id"],))[0][0]
        return (f"waits for metric rows from {first} on (they travel in a bundle not "
                "imported yet)")
    for (sha,) in store.read(
            "SELECT DISTINCT o.sha256 FROM associations a JOIN artifact_objects o "
            "ON o.artifact_id = a.artifact_id WHERE a.run_id = ? AND o.kind = 'file'",
            (run["id"],)):
        if not store.has_blob(sha):
            return f"waits for blob {sha[:12]}... (it travels in a bundle not imported yet)"
    return None
