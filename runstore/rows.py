"""Row-level helpers over the local store: find a run or artifact, read its metrics, its
remote history and its associations. Run, Artifact, inspect and remote all import these (and
nothing of each other's) so that the modules above the store do not import in a circle.

The one run resolver
--------------------
Every command and function that takes a run reference (``load_run``, ``runstore describe``,
``runstore upload``, ``syncd retry``) resolves it with :func:`resolve_run`, by one rule, the
first that matches:

1. the exact UUID;
2. the exact alternative name (unique per store);
3. the run's local directory (a path to it);
4. the name, if exactly ONE run has it; several runs of that name are an error listing them
   (Try: the alternative name);
5. a UUID prefix of at least MIN_UUID_PREFIX hex digits that matches exactly one run.

Artifacts (``load_artifact``, ``runstore upload``) are resolved by the same rule.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from runstore.errors import AmbiguousError, NotFoundError
from runstore.store import Store

# A UUID prefix shorter than this is more likely a typo than a reference.
MIN_UUID_PREFIX = 4
_TABLES = {"runs": "run", "artifacts": "artifact"}


def _listing(rows: list[sqlite3.Row]) -> str:
    names = ", ".join(r["alternative_name"] for r in rows[:5])
    return names + (", ..." if len(rows) > 5 else "")


def resolve(store: Store, table: str, ref: object) -> sqlite3.Row:
    """The row of ``table`` ('runs' or 'artifacts') that ref names, by the module's rule."""
    kind = _TABLES[table]
    if not isinstance(ref, (str, os.PathLike)) or not os.fspath(ref):
        raise NotFoundError(f"a {kind} reference must be a non-empty UUID, alternative name "
                            f"or name, not {ref!r}. Try: runstore ls")
    text = os.fspath(ref)
    rows = store.read(f"SELECT * FROM {table} WHERE uuid = ?", (text,))
    if not rows:
        rows = store.read(f"SELECT * FROM {table} WHERE alternative_name = ?", (text,))
    if not rows:
        candidate = Path(text).expanduser()
        if candidate.is_dir():
            rows = store.read(f"SELECT * FROM {table} WHERE local_dir = ?",
                              (str(candidate.resolve()),))
    if not rows:
        rows = store.read(f"SELECT * FROM {table} WHERE name = ? ORDER BY id", (text,))
        if len(rows) > 1:
            raise AmbiguousError(
                f"{len(rows)} {kind}s are named {text!r} in the store ({_listing(rows)}). "
                f"Try: the alternative name, e.g. {rows[-1]['alternative_name']!r} (the latest)")
    if not rows and len(text) >= MIN_UUID_PREFIX and all(c in "0123456789abcdef-"
                                                          for c in text.lower()):
        prefix = text.lower().replace("-", "")
        rows = store.read(f"SELECT * FROM {table} WHERE substr(replace(uuid, '-', ''), 1, ?) "
                          "= ? ORDER BY id", (len(prefix), prefix))
        if len(rows) > 1:
            raise AmbiguousError(
                f"{kind} reference {text!r} matches {len(rows)} {kind}s by UUID prefix "
                f"({_listing(rows)}). Try: a longer prefix or the alternative name")
    if not rows:
        raise NotFoundError(
            f"no {kind} {text!r} in the store {str(store.home)!r} (not a UUID, alternative "
            "name, directory or name there). Try: runstore ls")
    return rows[0]


def resolve_run(store: Store, ref: object) -> sqlite3.Row:
    """The runs row ref names (see the module's rule)."""
    return resolve(store, "runs", ref)


def resolve_artifact(store: Store, ref: object) -> sqlite3.Row:
    """The artifacts row ref names (the same rule as runs)."""
    return resolve(store, "artifacts", ref)


def remote_history(store: Store, entity: str, entity_uuid: str) -> list[dict[str, Any]]:
    """t9k's ``remote`` list of a run or artifact: its uploads and downloads, oldest first."""
    return [
        {"action": r["action"], "timestamp": r["timestamp"], "host": r["host"],
         "path": r["path"], "id": r["remote_id"]}
        for r in store.read(
            "SELECT action, timestamp, host, path, remote_id FROM remote_history "
            "WHERE entity = ? AND entity_uuid = ? ORDER BY id", (entity, entity_uuid))
    ]


def read_metrics(store: Store, run_id: int) -> dict[str, list[dict[str, Any]]]:
    """Rebuild t9k's run.metrics from the long-format rows (one record per log() call)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current: dict[str, Any] | None = None
    current_key: tuple | None = None
    conn = store.connection()
    for type_, key, step, epoch, value, ts in conn.execute(
            "SELECT type, key, step, epoch, value, timestamp FROM metrics WHERE run_id = ? "
            "ORDER BY seq", (run_id,)):
        group = (type_, step, epoch, ts)
        if current is None or group != current_key or key in current["value"]:
            current = {"value": {}, "sequence": {"epoch": epoch, "step": step, "timestamp": ts}}
            current_key = group
            out.setdefault(type_, []).append(current)
        current["value"][key] = float("nan") if value is None else value
    return out


def associations(store: Store, run_id: int) -> dict[str, list[dict[str, Any]]]:
    """A run's input/output entries in t9k's shape, in the order they were marked."""
    out: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
    for row in store.read(
            "SELECT direction, entry FROM associations WHERE run_id = ? "
            "ORDER BY direction, position", (run_id,)):
        out[row["direction"]].append(json.loads(row["entry"]))
    return out
