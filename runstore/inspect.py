"""The read side of the local store: list runs, find one by reference, describe it.

What `runstore ls` and `runstore describe` show (t9k's `em ls` / `em describe`), as data; the
CLI only renders it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runstore.errors import AmbiguousError as AmbiguousRunError  # noqa: F401  (re-exported)
from runstore.errors import InvalidValueError
from runstore.rows import MIN_UUID_PREFIX as MIN_UUID_PREFIX
from runstore.rows import read_metrics, remote_history
from runstore.rows import resolve_run as resolve_run
from runstore.store import Store
from runstore.timeutil import unix_from_iso

STATUSES = ("Running", "Complete", "Error")


@dataclass(frozen=True)
class RunSummary:
    """One line of `runstore ls`: a run's metadata, its duration and sync state."""

    name: str
    alternative_name: str
    uuid: str
    status: str
    start_timestamp: str
    end_timestamp: str | None
    labels: list[str]
    description: str
    duration_s: float | None
    sync_state: str | None
    remote_path: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_remote(cls, entry: Mapping[str, Any], now: float | None = None) -> RunSummary:
        """A run listed by the server (runstore.remote.list_remote) as a summary."""
        start, end = entry.get("start_timestamp"), entry.get("end_timestamp")
        return cls(
            name=entry["name"], alternative_name=entry.get("alternative_name") or "",
            uuid=entry.get("uuid") or "", status=entry.get("status") or "",
            start_timestamp=start or "", end_timestamp=end, labels=list(entry.get("labels") or []),
            description=entry.get("description") or "",
            duration_s=duration_s(start, end, now),
            sync_state="synced" if entry.get("complete") else "uploading",
            remote_path=entry.get("path"))


def duration_s(start: str | None, end: str | None, now: float | None = None) -> float | None:
    """Seconds from start to end (to now while the run has no end); None if unparsable."""
    if not start:
        return None
    try:
        begin = unix_from_iso(start)
        finish = unix_from_iso(end) if end else (time.time() if now is None else now)
    except ValueError:
        return None
    return max(0.0, finish - begin)


def format_duration(seconds: float | None) -> str:
    """12s, 3m05s, 2h03m09s, 1d04h07m ('' when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_started(timestamp: str | None) -> str:
    """The wall-clock time a run started, as recorded: 2023-12-22 14:19:32."""
    return (timestamp or "")[:19].replace("T", " ")


_SUMMARY_SQL = """
SELECT r.*, s.state AS sync_state, s.remote_path AS sync_remote_path
FROM runs r LEFT JOIN sync_state s ON s.run_id = r.id
"""


def _summary(row: sqlite3.Row, now: float | None) -> RunSummary:
    return RunSummary(
        name=row["name"], alternative_name=row["alternative_name"], uuid=row["uuid"],
        status=row["status"], start_timestamp=row["start_timestamp"],
        end_timestamp=row["end_timestamp"], labels=json.loads(row["labels"]),
        description=row["description"],
        duration_s=duration_s(row["start_timestamp"], row["end_timestamp"], now),
        sync_state=row["sync_state"], remote_path=row["sync_remote_path"])


def list_runs(store: Store, *, status: str | None = None, labels: Iterable[str] = (),
              name: str | None = None, now: float | None = None) -> list[RunSummary]:
    """The store's runs, oldest first, filtered as in filter_runs()."""
    runs = [_summary(row, now) for row in store.read(_SUMMARY_SQL + " ORDER BY r.id")]
    return filter_runs(runs, status=status, labels=labels, name=name)


def filter_runs(runs: Iterable[RunSummary], *, status: str | None = None,
                labels: Iterable[str] = (), name: str | None = None) -> list[RunSummary]:
    """Runs with this status, all of these labels, and a name or alternative name matching
    the glob pattern ``name`` (``*``, ``?``, ``[...]``; case-sensitive)."""
    if status is not None and status not in STATUSES:
        raise InvalidValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    wanted = set(labels)
    return [
        r for r in runs
        if (status is None or r.status == status)
        and wanted.issubset(r.labels)
        and (name is None or fnmatch.fnmatchcase(r.name, name)
             or fnmatch.fnmatchcase(r.alternative_name, name))
    ]


def _metric_summary(store: Store, run_id: int) -> list[dict[str, Any]]:
    rows = store.read(
        "SELECT type, key, COUNT(*) AS n, MIN(value) AS min_value, MAX(value) AS max_value, "
        "SUM(value IS NULL) AS nan_count, MIN(step) AS first_step, MAX(step) AS last_step "
        "FROM metrics WHERE run_id = ? GROUP BY type, key ORDER BY MIN(seq)", (run_id,))
    # One max() aggregate only: SQLite then takes the bare column from the row with MAX(seq).
    last = {(r["type"], r["key"]): r["value"] for r in store.read(
        "SELECT type, key, value, MAX(seq) FROM metrics WHERE run_id = ? GROUP BY type, key",
        (run_id,))}
    return [dict(r) | {"last_value": last[(r["type"], r["key"])]} for r in rows]


def _artifacts(store: Store, run_id: int) -> list[dict[str, Any]]:
    out = []
    for art in store.read(
            "SELECT a.id, a.name, a.alternative_name, a.uuid, a.labels, a.description, "
            "a.created_timestamp, a.local_dir, group_concat(DISTINCT s.direction) AS directions "
            "FROM associations s JOIN artifacts a ON a.id = s.artifact_id "
            "WHERE s.run_id = ? GROUP BY a.id ORDER BY min(s.direction), min(s.position)",
            (run_id,)):
        objects = [dict(o) for o in store.read(
            "SELECT path, kind, size_bytes, sha256, uri FROM artifact_objects "
            "WHERE artifact_id = ? ORDER BY path", (art["id"],))]
        entry = {k: art[k] for k in ("name", "alternative_name", "uuid", "description",
                                     "created_timestamp", "local_dir")}
        entry["labels"] = json.loads(art["labels"])
        entry["directions"] = sorted(art["directions"].split(","))
        entry["objects"] = objects
        out.append(entry)
    return out


def _sync(store: Store, run_id: int) -> dict[str, Any] | None:
    rows = store.read(
        "SELECT state, attempts, last_error, remote_path, synced_at FROM sync_state "
        "WHERE run_id = ?", (run_id,))
    return dict(rows[0]) if rows else None


def describe_run(store: Store, ref: str, *, detail: bool = False,
                 now: float | None = None) -> dict[str, Any]:
    """Everything about one run: metadata and sync state; with ``detail`` also hyperparameters,
    metric records, platform, git, lineage, artifacts and their objects, remote history."""
    row = resolve_run(store, ref)
    summary = _summary(store.read(_SUMMARY_SQL + " WHERE r.id = ?", (row["id"],))[0], now)
    out: dict[str, Any] = summary.as_dict()
    out.update(
        local_dir=row["local_dir"], hostname=row["hostname"],
        target={"folder": row["folder"], "make_folder": bool(row["make_folder"]),
                "conflict_strategy": row["conflict_strategy"],
                "auto_upload": bool(row["auto_upload"])},
        sync=_sync(store, row["id"]),
        metric_summary=_metric_summary(store, row["id"]),
    )
    if detail:
        out.update(
            hparams=json.loads(row["hparams"]),
            metrics=read_metrics(store, row["id"]),
            platform=json.loads(row["platform"]),
            git=json.loads(row["git"]),
            associations=_associations(store, row["id"]),
            artifacts=_artifacts(store, row["id"]),
            remote=remote_history(store, "run", row["uuid"]),
        )
    return out


def _associations(store: Store, run_id: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
    for r in store.read("SELECT direction, entry FROM associations WHERE run_id = ? "
                        "ORDER BY direction, position", (run_id,)):
        out[r["direction"]].append(json.loads(r["entry"]))
    return out


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted.key, value) pairs, in insertion order."""
    items: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(flatten(value, path + "."))
        else:
            items.append((path, value))
    return items


def metric_table(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One type's t9k metric records as a table: step, epoch, then each key in first-seen
    order (None where a record lacks the key)."""
    keys: dict[str, None] = {}
    for rec in records:
        keys.update(dict.fromkeys(rec["value"]))
    columns = ["step", "epoch", *keys]
    rows = [[rec["sequence"]["step"], rec["sequence"]["epoch"],
             *(rec["value"].get(k) for k in keys)] for rec in records]
    return columns, rows
