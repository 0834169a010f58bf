"""Sync bookkeeping in the local store: which finished runs still need uploading.

A run enters ``sync_state`` as 'pending' when it finishes (a trigger does it, whatever code
path finished the run). The uploader (runstore.remote) marks it 'synced' only after the
server acknowledged finalize; the daemon (syncd) moves it between 'pending', 'uploading' and
'failed' and schedules retries via ``next_attempt_at``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from runstore.store import Store
from runstore.timeutil import now_iso

STATES = ("pending", "uploading", "synced", "failed")


@dataclass(frozen=True)
class SyncEntry:
    run_id: int
    run_uuid: str
    alternative_name: str
    name: str
    status: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    remote_path: str | None
    folder: str
    make_folder: bool
    conflict_strategy: str
    auto_upload: bool


_SELECT = """
SELECT s.run_id, r.uuid AS run_uuid, r.alternative_name, r.name, r.status, s.state,
       s.attempts, s.last_error, s.next_attempt_at, s.remote_path, r.folder, r.make_folder,
       r.conflict_strategy, r.auto_upload
FROM sync_state s JOIN runs r ON r.id = s.run_id
"""


def _entry(row) -> SyncEntry:
    d = dict(row)
    d["make_folder"] = bool(d["make_folder"])
    d["auto_upload"] = bool(d["auto_upload"])
    return SyncEntry(**d)


def entries(store: Store, states: tuple[str, ...] = STATES) -> list[SyncEntry]:
    """All sync entries in the given states, oldest run first."""
    marks = ",".join("?" * len(states))
    rows = store.read(_SELECT + f" WHERE s.state IN ({marks}) ORDER BY s.run_id", states)
    return [_entry(r) for r in rows]


def due_runs(store: Store, now: float | None = None, *,
             only_auto_upload: bool = False) -> list[SyncEntry]:
    """Finished runs to upload now: pending (or uploading, left by a killed daemon), due."""
    now = time.time() if now is None else now
    sql = (_SELECT + " WHERE s.state IN ('pending', 'uploading') AND r.status != 'Running'"
           " AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= ?)")
    if only_auto_upload:
        sql += " AND r.auto_upload = 1"
    return [_entry(r) for r in store.read(sql + " ORDER BY s.run_id", (now,))]


def next_due_at(store: Store) -> float | None:
    """The earliest scheduled retry among pending runs (None if nothing is scheduled)."""
    row = store.read("SELECT MIN(next_attempt_at) FROM sync_state "
                     "WHERE state IN ('pending', 'uploading') AND next_attempt_at IS NOT NULL")
    return row[0][0] if row else None


def get(store: Store, run_uuid: str) -> SyncEntry | None:
    rows = store.read(_SELECT + " WHERE r.uuid = ?", (run_uuid,))
    return _entry(rows[0]) if rows else None


def mark_uploading(store: Store, run_uuid: str) -> bool:
    """Claim a pending (or left-uploading) run for an attempt; False if it is not due anymore.

    A run synced or failed meanwhile (by another uploader, or `syncd retry` racing) is left
    alone, so a 'synced' mark is never overwritten.
    """
    with store.write() as conn:
        cur = conn.execute(
            "UPDATE sync_state SET state = 'uploading', attempts = attempts + 1, "
            "updated_at = ? WHERE run_id = (SELECT id FROM runs WHERE uuid = ?) "
            "AND state IN ('pending', 'uploading')",
            (time.time(), run_uuid))
        return cur.rowcount > 0


def defer_pending(store: Store, until: float) -> int:
    """The server is away: no pending run is tried before ``until`` (later schedules kept)."""
    with store.write() as conn:
        cur = conn.execute(
            "UPDATE sync_state SET next_attempt_at = ?, updated_at = ? "
            "WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at < ?)",
            (until, time.time(), until))
        return cur.rowcount


def mark_retry(store: Store, run_uuid: str, error: str, next_attempt_at: float) -> None:
    """A transient failure: stay pending, try again at next_attempt_at."""
    with store.write() as conn:
        conn.execute(
            "UPDATE sync_state SET state = 'pending', last_error = ?, next_attempt_at = ?, "
            "updated_at = ? WHERE run_id = (SELECT id FROM runs WHERE uuid = ?) "
            "AND state != 'synced'",
            (error, next_attempt_at, time.time(), run_uuid))


def mark_failed(store: Store, run_uuid: str, error: str) -> None:
    """A permanent failure: the run needs attention (``syncd retry`` puts it back)."""
    with store.write() as conn:
        conn.execute(
            "UPDATE sync_state SET state = 'failed', last_error = ?, next_attempt_at = NULL, "
            "updated_at = ? WHERE run_id = (SELECT id FROM runs WHERE uuid = ?) "
            "AND state != 'synced'",
            (error, time.time(), run_uuid))


def mark_synced(conn, run_uuid: str, remote_path: str, metrics_acked: int) -> None:
    """Inside the caller's write transaction: the server acknowledged finalize."""
    conn.execute(
        "INSERT INTO sync_state (run_id, state, remote_path, metrics_acked, synced_at, "
        "updated_at) SELECT id, 'synced', ?, ?, ?, ? FROM runs WHERE uuid = ? "
        "ON CONFLICT (run_id) DO UPDATE SET state = 'synced', remote_path = excluded.remote_path,"
        " metrics_acked = excluded.metrics_acked, synced_at = excluded.synced_at,"
        " last_error = NULL, next_attempt_at = NULL, updated_at = excluded.updated_at",
        (remote_path, metrics_acked, now_iso(), time.time(), run_uuid))


def requeue(store: Store, run_uuid: str | None = None, *, all_failed: bool = False) -> int:
    """Put failed runs (one by UUID: resolve a reference with runstore.rows.resolve_run first,
    or all) back to pending; returns how many."""
    with store.write() as conn:
        if all_failed:
            cur = conn.execute(
                "UPDATE sync_state SET state = 'pending', next_attempt_at = NULL, attempts = 0,"
                " updated_at = ? WHERE state = 'failed'", (time.time(),))
        else:
            cur = conn.execute(
                "UPDATE sync_state SET state = 'pending', next_attempt_at = NULL, attempts = 0,"
                " updated_at = ? WHERE run_id IN (SELECT id FROM runs WHERE uuid = ?) "
                "AND state != 'synced'", (time.time(), run_uuid))
        return cur.rowcount


def counts(store: Store) -> dict[str, int]:
    """How many runs are in each sync state (plus 'running': not finished yet)."""
    out = {s: 0 for s in STATES}
    for state, n in store.read("SELECT state, COUNT(*) FROM sync_state GROUP BY state"):
        out[state] = n
    out["running"] = store.read("SELECT COUNT(*) FROM runs WHERE status = 'Running'")[0][0]
    return out
