"""Run: one training run, t9k.em's Run backed by the local SQLite store."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
import uuid as _uuid
from pathlib import Path
from typing import Any

from runstore import capture
from runstore.errors import InvalidTypeError, InvalidValueError, RunStateError
from runstore.lifecycle import default_store, install_exit_handlers, writer_for
from runstore.lineage import association_entry
from runstore.names import alternative_name as make_alternative_name
from runstore.params import Params, check_json
from runstore.rows import associations as read_associations
from runstore.rows import read_metrics, remote_history
from runstore.rows import resolve_run as find_run_row
from runstore.rules import (
    INT64_MAX,
    INT64_MIN,
    check_alternative_name,
    check_conflict_strategy,
    check_description,
    check_folder,
    check_int64,
    check_labels,
    check_metric_key,
    check_metric_type,
    check_name,
    short,
)
from runstore.store import Store, hostname
from runstore.timeutil import now_iso
from runstore.writer import MAX_BUFFERED_RECORDS, WAKE_AT_RECORDS, Writer, to_float

__all__ = ["Run", "find_run_row", "read_metrics", "remote_history"]

_str, _float, _int, _bool = str, float, int, bool
_check_labels = check_labels


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


class Run:
    """A run of a model for some ML task (t9k.em.Run), stored in the local SQLite store."""

    # -- construction ----------------------------------------------------------------------
    def __init__(self, metadata: dict[str, Any], hparams: dict[str, Any] | None = None,
                 metrics: dict[str, list[dict[str, Any]]] | None = None,
                 platform: dict[str, Any] | None = None, git: dict[str, Any] | None = None,
                 *, store: Store | None = None, _row: Any = None) -> None:
        self._store = store or default_store()
        self._pending: collections.deque = collections.deque()
        self._flush_lock = threading.RLock()
        self._tee: capture.StdoutTee | None = None
        self._owner_pid = os.getpid()
        # Metric types and keys that passed rules.check_metric_*: checked once per run, not
        # once per log() call (the hot path).
        self._ok_text: set[str] = set()
        if _row is None:
            _row = self._insert(metadata, hparams or {}, platform, git)
        self._load_row(_row)
        self._hparams = Params(json.loads(_row["hparams"]), persist=self._persist_hparams)
        if metrics:
            for type_, records in metrics.items():
                for rec in records:
                    seq = rec.get("sequence", {})
                    self.log(type_, rec.get("value", {}), seq.get("step", 0), seq.get("epoch"))
        if self._status == "Running":
            self._writer.register(self)
            install_exit_handlers()

    def _insert(self, metadata: dict[str, Any], hparams: dict[str, Any],
                platform: dict[str, Any] | None, git: dict[str, Any] | None) -> Any:
        name = check_name(metadata.get("name", "default"))
        labels = _check_labels(metadata.get("labels"))
        description = check_description(metadata.get("description"))
        for key, value in hparams.items():
            if not isinstance(key, str):
                raise InvalidTypeError(f"hyperparameter names must be str, not {key!r}")
            check_json(key, value)
        target = metadata.get("_target", {})
        check_folder(target.get("folder", "default"))
        check_conflict_strategy(target.get("conflict_strategy", "new"))
        alt = metadata.get("alternativeName") or make_alternative_name(name)
        check_alternative_name(alt)
        run_uuid = metadata.get("_uuid") or _uuid.uuid4().hex
        local_dir = self._store.run_dir(alt)
        pid, pid_start = capture.pid_identity()
        platform = platform if platform is not None else capture.platform_info()
        git = git if git is not None else capture.git_info()
        with self._store.write() as conn:
            cur = conn.execute(
                "INSERT INTO runs (uuid, name, alternative_name, labels, description, status, "
                "start_timestamp, hparams, platform, git, local_dir, folder, make_folder, "
                "conflict_strategy, auto_upload, hostname, pid, pid_start, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?, 'Running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_uuid, name, alt, _json(labels), description,
                 metadata.get("startTimestamp") or now_iso(), _json(hparams), _json(platform),
                 _json(git), str(local_dir), target.get("folder", "default"),
                 int(bool(target.get("make_folder", False))),
                 target.get("conflict_strategy", "new"), int(bool(target.get("auto_upload"))),
                 hostname(), pid, pid_start, time.time()))
            row_id = cur.lastrowid
        local_dir.mkdir(parents=True, exist_ok=True)
        return self._store.read("SELECT * FROM runs WHERE id = ?", (row_id,))[0]

    def _load_row(self, row: Any) -> None:
        self.id: int = row["id"]
        self.uuid: str = row["uuid"]
        self._name = row["name"]
        self._alternative_name = row["alternative_name"]
        self._labels = json.loads(row["labels"])
        self._description = row["description"]
        self._status = row["status"]
        self._start = row["start_timestamp"]
        self._end = row["end_timestamp"]
        self._platform = json.loads(row["platform"])
        self._git = json.loads(row["git"])
        self._local = row["local_dir"]
        self._metric_count = row["metric_count"]

    @classmethod
    def _from_store(cls, store: Store, row: Any) -> Run:
        run = cls.__new__(cls)
        Run.__init__(run, {}, store=store, _row=row)
        return run

    @property
    def _writer(self) -> Writer:
        return writer_for(self._store)

    def __repr__(self) -> str:
        return f"<Run {self._alternative_name} {self._status}>"

    # -- properties (t9k) ------------------------------------------------------------------
    name = property(lambda self: self._name, doc="Name of the Run.")
    alternative_name = property(lambda self: self._alternative_name,
                                doc="<name>_<yymmdd>_<HHMMSS>_<6 chars>, unique per store.")
    start_timestamp = property(lambda self: self._start)
    end_timestamp = property(lambda self: self._end)
    status = property(lambda self: self._status, doc="Running, Complete or Error.")
    platform = property(lambda self: self._platform)
    git = property(lambda self: self._git)
    local = property(lambda self: self._local, doc="The run's directory (holds stdout.log).")
    hparams = property(lambda self: self._hparams, doc="Hyperparameters (a Params).")

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @labels.setter
    def labels(self, value: list[str]) -> None:
        labels = _check_labels(value)
        self._update_columns(labels=_json(labels))
        self._labels = labels

    @property
    def description(self) -> str:
        return self._description

    @description.setter
    def description(self, value: str) -> None:
        if not isinstance(value, str):
            raise InvalidTypeError(f"description must be a str, not {value!r}")
        check_description(value)
        self._update_columns(description=value)
        self._description = value

    @property
    def associations(self) -> dict[str, list[dict[str, Any]]]:
        return read_associations(self._store, self.id)

    asso = associations

    @property
    def remote(self) -> list[dict[str, Any]]:
        return remote_history(self._store, "run", self.uuid)

    @property
    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """Dict[type, List[{'value': {...}, 'sequence': {'epoch', 'step', 'timestamp'}}]]."""
        if self._pending:
            self._writer.flush(self)
        return read_metrics(self._store, self.id)

    def _update_columns(self, **columns: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in columns)
        with self._store.write() as conn:
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*columns.values(), self.id))

    def _persist_hparams(self, data: dict[str, Any]) -> None:
        self._update_columns(hparams=_json(data))

    # -- logging ---------------------------------------------------------------------------
    def log(self, type: str, metrics: dict[str, float], step: int,  # noqa: A002
            epoch: int | None = None) -> None:
        """Log metrics of a type ('train', 'val', 'test', synonyms or any string) at a step.

        Values go through float(); the call only appends to an in-memory buffer.
        """
        if self._status != "Running":
            raise RunStateError(
                f"run {self._alternative_name!r} is {self._status}. "
                f"Try: em.load_run({self._alternative_name!r}) to log more")
        ok = self._ok_text
        if type.__class__ is not _str or type not in ok:
            ok.add(check_metric_type(type))
        if step.__class__ is not _int or not INT64_MIN <= step <= INT64_MAX:
            step = check_int64(step, "step")
        if epoch is not None and (epoch.__class__ is not _int
                                  or not INT64_MIN <= epoch <= INT64_MAX):
            epoch = check_int64(epoch, "epoch")
        values = {}
        try:
            for key, value in metrics.items():
                cls = value.__class__
                if key.__class__ is not _str or key not in ok:
                    ok.add(check_metric_key(key))
                if cls is _float:
                    values[key] = value
                elif cls is _int or cls is _bool:
                    values[key] = _float(value)
                else:
                    values[key] = to_float(key, value)
        except AttributeError:
            raise InvalidTypeError(
                f"metrics must be a dict of name -> number, not {short(metrics)}. "
                "Try: run.log('train', {'loss': 0.1}, step=1)") from None
        except OverflowError:
            raise InvalidTypeError(f"metric {short(key)} is an integer too large for a float. "
                            "Try: log float(value) of a smaller number") from None
        pending = self._pending
        pending.append((type, values, step, epoch, time.time()))
        if len(pending) >= WAKE_AT_RECORDS:
            if len(pending) >= MAX_BUFFERED_RECORDS:
                self._writer.flush(self)
            else:
                self._writer.wake.set()

    def flush(self) -> int:
        """Write buffered metrics now (they are written every half second anyway)."""
        return self._writer.flush(self)

    def finish(self, *args: Any, **kwargs: Any) -> None:
        """Mark the run Complete (flushing everything). A second call raises RuntimeError."""
        self._end_run("Complete")

    def _end_run(self, status: str) -> None:
        if self._status != "Running":
            raise RunStateError(
                f"run {self._alternative_name!r} is already finished ({self._status}). "
                "Try: finish() once; load_run() to go on with it")
        self._writer.flush(self)
        if self._tee is not None:
            # stdout.log holds what was printed before the run reads as ended: an upload that
            # sees the end sends the whole log
            with contextlib.suppress(OSError, ValueError):
                self._tee.flush()
        end = now_iso()
        hparams = _json(self._hparams._data)  # catches nested values mutated in place
        with self._store.write() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, end_timestamp = ?, hparams = ?, heartbeat_at = ? "
                "WHERE id = ?", (status, end, hparams, time.time(), self.id))
        self._status, self._end = status, end
        self._writer.unregister(self)
        capture.stop_tee(self._tee)
        self._tee = None

    def _start_tee(self) -> None:
        if self._tee is None:
            self._tee = capture.start_tee(Path(self._local) / "stdout.log")

    def _reopen(self) -> None:
        """load_run(): back to Running, end timestamp cleared, owned by this process."""
        pid, pid_start = capture.pid_identity()
        with self._store.write() as conn:
            conn.execute(
                "UPDATE runs SET status = 'Running', end_timestamp = NULL, hostname = ?, "
                "pid = ?, pid_start = ?, heartbeat_at = ?, generation = generation + 1 "
                "WHERE id = ?",
                (hostname(), pid, pid_start, time.time(), self.id))
        self._status, self._end = "Running", None
        self._owner_pid = os.getpid()
        self._writer.register(self)
        install_exit_handlers()

    # -- lineage ---------------------------------------------------------------------------
    def mark_input(self, resource: Any) -> None:
        """Record an Artifact, Model, Dataset, Branch, Tag or Commit as an input."""
        self._associate("input", resource)

    def mark_output(self, resource: Any) -> None:
        """Record an Artifact, Model, Dataset, Branch, Tag or Commit as an output."""
        self._associate("output", resource)

    def _associate(self, direction: str, resource: Any) -> None:
        entry, artifact_id = association_entry(resource)
        with self._store.write() as conn:
            for (existing,) in conn.execute(
                    "SELECT entry FROM associations WHERE run_id = ? AND direction = ?",
                    (self.id, direction)):
                if json.loads(existing) == entry:
                    return  # duplicates are skipped, as in t9k
            position = conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM associations "
                "WHERE run_id = ? AND direction = ?", (self.id, direction)).fetchone()[0]
            conn.execute(
                "INSERT INTO associations (run_id, direction, position, kind, artifact_id, "
                "entry) VALUES (?, ?, ?, ?, ?, ?)",
                (self.id, direction, position, entry["kind"], artifact_id, _json(entry)))

    # -- dict form -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The run's metadata in t9k's shape."""
        return {
            "kind": "Run",
            "name": self._name,
            "labels": list(self._labels),
            "description": self._description,
            "startTimestamp": self._start,
            "endTimestamp": self._end,
            "status": self._status,
            "alternativeName": self._alternative_name,
            "associations": self.associations,
            "remote": self.remote,
        }

    def parse_from_dict(self, data: dict[str, Any]) -> None:
        """Set the metadata from a dict shaped like to_dict() (persisted)."""
        if data.get("kind", "Run") != "Run":
            raise InvalidValueError(f"not a Run dict: kind is {data.get('kind')!r}")
        name = check_name(data.get("name", self._name))
        labels = _check_labels(data.get("labels", self._labels))
        description = check_description(data.get("description", self._description))
        status = data.get("status", self._status)
        if status not in ("Running", "Complete", "Error"):
            raise InvalidValueError(f"status {status!r} is not Running, Complete or Error")
        if status == "Running" and self._status != "Running":
            raise InvalidValueError(f"status 'Running' would re-open the ended run "
                             f"{self._alternative_name!r}; use load_run() to go on with it")
        columns = {
            "name": name, "labels": _json(labels),
            "description": description,
            "start_timestamp": data.get("startTimestamp", self._start),
            "end_timestamp": data.get("endTimestamp", self._end),
            "status": status,
        }
        alt = data.get("alternativeName", self._alternative_name)
        if alt != self._alternative_name:
            check_alternative_name(alt)
            if self._store.read("SELECT 1 FROM runs WHERE alternative_name = ?", (alt,)):
                raise InvalidValueError(f"alternativeName {alt!r} belongs to another run in this "
                                 "store; use load_run() to open that run")
            columns["alternative_name"] = alt
        assoc = data.get("associations")
        entries = []
        if assoc is not None:
            for direction in ("input", "output"):
                for item in assoc.get(direction, []):
                    entry, artifact_id = association_entry(item)
                    entries.append((direction, entry, artifact_id))
        if self._status == "Running" and status != "Running":
            self._writer.flush(self)  # this ends the run: its buffered rows first, as finish()
        with self._store.write() as conn:
            # A dict names an artifact by its alternative name: link it as mark_*() does, or
            # its upload would lose the artifact (its lineage keeps only the entry).
            for i, (direction, entry, artifact_id) in enumerate(entries):
                if artifact_id is None and entry["kind"] == "Artifact":
                    found = conn.execute("SELECT id FROM artifacts WHERE alternative_name = ?",
                                         (entry["name"],)).fetchone()
                    entries[i] = (direction, entry, found[0] if found else None)
            # Associations first: a run this ends counts them as part of its end, not as a
            # change after it (a schema trigger starts a new generation for those).
            old_entries = [(d, json.loads(e), a) for d, e, a in conn.execute(
                "SELECT direction, entry, artifact_id FROM associations WHERE run_id = ? "
                "ORDER BY direction, position", (self.id,))]
            new_entries = sorted(entries, key=lambda e: e[0] != "input")  # stable: input first
            if assoc is not None and new_entries != old_entries:  # unchanged: not an edit
                conn.execute("DELETE FROM associations WHERE run_id = ?", (self.id,))
                positions: collections.Counter[str] = collections.Counter()
                for direction, entry, artifact_id in entries:
                    conn.execute(
                        "INSERT INTO associations (run_id, direction, position, kind, "
                        "artifact_id, entry) VALUES (?, ?, ?, ?, ?, ?)",
                        (self.id, direction, positions[direction], entry["kind"],
                         artifact_id, _json(entry)))
                    positions[direction] += 1
            sets = ", ".join(f"{k} = ?" for k in columns)
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*columns.values(), self.id))
        was_running = self._status == "Running"
        row = self._store.read("SELECT * FROM runs WHERE id = ?", (self.id,))[0]
        self._load_row(row)
        if was_running and self._status != "Running":
            self._writer.unregister(self)
            capture.stop_tee(self._tee)
            self._tee = None

    # -- upload ----------------------------------------------------------------------------
    def upload(self, folder: str = "default", make_folder: bool = False,
               conflict_strategy: str = "new") -> None:
        """Upload this run (and its input/output artifacts) to the server now."""
        from runstore.remote import Client, upload_run

        check_folder(folder)
        check_conflict_strategy(conflict_strategy)
        if self._pending:
            self._writer.flush(self)
        with Client.from_config() as client:
            upload_run(self._store, self.uuid, client, folder=folder, make_folder=make_folder,
                       conflict_strategy=conflict_strategy)
