"""The logging hot path: validate cheaply, buffer in memory, flush in batches off the loop.

``Run.log()`` converts values to float and appends one tuple to the run's deque; a writer
thread (one per process and store) flushes every run's buffer with ``executemany`` in one
``BEGIN IMMEDIATE`` transaction every ``flush_interval_s``, when a buffer grows large, on
``finish()`` and at exit. The training loop never waits for the disk.
"""

from __future__ import annotations

import collections
import datetime as _dt
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from runstore.errors import InvalidTypeError, StoreError
from runstore.rules import short

if TYPE_CHECKING:
    from runstore.store import Store


class Run(Protocol):
    """What the writer and the exit handlers need of a live run (runstore.run.Run): the
    writer sits below the run module, so it names the shape, not the class."""

    _pending: collections.deque
    _flush_lock: Any
    _metric_count: int
    _owner_pid: int
    _status: str

    @property
    def id(self) -> int: ...

    @property
    def alternative_name(self) -> str: ...

    def _end_run(self, status: str) -> None: ...

INSERT_METRICS = (
    "INSERT INTO metrics (run_id, seq, type, key, step, epoch, value, timestamp) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
FLUSH_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 10.0
# A buffer this long wakes the writer at once, so memory stays flat in tight loops.
WAKE_AT_RECORDS = 5_000
# Past this many buffered records log() flushes itself (backpressure: only when logging
# outpaces the disk), so memory stays bounded.
MAX_BUFFERED_RECORDS = 20_000
# Records written per transaction (bounds the rows held in memory while writing).
FLUSH_CHUNK_RECORDS = 5_000

_float = float


def to_float(key: str, value: Any) -> float:
    """float(value) for numbers, numpy/torch scalars and one-element arrays; else TypeError."""
    if isinstance(value, (str, bytes, bytearray)) or value is None or isinstance(value, dict):
        raise InvalidTypeError(
            f"metric {short(key)} has value {short(value)} of type {type(value).__name__}. "
            "Try: log numbers (int, float, numpy or torch scalars) only")
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", 0) != 0:
        size = getattr(value, "size", None)
        size = size() if callable(size) else size
        numel = getattr(value, "numel", None)
        if numel is not None:
            size = numel()
        if size != 1:
            raise InvalidTypeError(f"metric {short(key)} is an array of {size} elements. "
                            "Try: log one number")
    try:
        return _float(item() if item is not None else value)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(
            f"metric {short(key)} has value {short(value)} of type {type(value).__name__} that "
            f"float() refuses ({exc}). Try: log numbers only") from exc


class TimestampFormatter:
    """Unix time -> local ISO 8601 with microseconds, formatting each second only once."""

    def __init__(self) -> None:
        self._second: int | None = None
        self._head = ""
        self._tail = ""

    def __call__(self, ts: float) -> str:
        second = int(ts)
        if second != self._second:
            text = _dt.datetime.fromtimestamp(second).astimezone().isoformat()
            self._head, self._tail = text[:19], text[19:]
            self._second = second
        micros = int((ts - second) * 1_000_000)
        return f"{self._head}.{micros:06d}{self._tail}"


def expand_rows(run_id: int, base_seq: int, records: Iterable[tuple]) -> Iterator[tuple]:
    """Buffered log records -> metric rows in long format (NaN stored as NULL)."""
    fmt = TimestampFormatter()
    seq = base_seq
    for type_, values, step, epoch, ts in records:
        iso = fmt(ts)
        for key, value in values.items():
            yield (run_id, seq, type_, key, step, epoch, value if value == value else None, iso)
            seq += 1


class Writer:
    """One per process and store: flushes the buffers of the live runs of this process."""

    def __init__(self, store: Store, flush_interval_s: float = FLUSH_INTERVAL_S,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.wake = threading.Event()
        # Strong references: a live run's buffered rows must outlive the user's variable.
        self._runs: dict[int, Run] = {}
        self._runs_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._last_error: str | None = None

    def register(self, run: Run) -> None:
        with self._runs_lock:
            self._runs[run.id] = run
        self._ensure_thread()

    def unregister(self, run: Run) -> None:
        with self._runs_lock:
            self._runs.pop(run.id, None)

    def live_run(self, run_id: int) -> Run | None:
        with self._runs_lock:
            return self._runs.get(run_id)

    def live_runs(self) -> list[Run]:
        with self._runs_lock:
            return list(self._runs.values())

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's thread does not exist here
            self._pid = os.getpid()
            self._thread = None
            self.wake = threading.Event()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="runstore-writer",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        last_beat = 0.0
        while True:
            self.wake.wait(self.flush_interval_s)
            self.wake.clear()
            beat = time.monotonic() - last_beat >= self.heartbeat_interval_s
            if beat:
                last_beat = time.monotonic()
            for run in self.live_runs():
                try:
                    self.flush(run, heartbeat=beat)
                except Exception as exc:  # never let the thread die; report once per change
                    self._report(f"{run.alternative_name}: {exc}")
                else:
                    self._report(None)

    def _report(self, error: str | None) -> None:
        if error != self._last_error:
            if error is not None:
                print(f"runstore: cannot write metrics yet, keeping them in memory and "
                      f"retrying: {error}", file=sys.stderr)
            elif self._last_error is not None:
                print("runstore: writing metrics again", file=sys.stderr)
            self._last_error = error

    def flush(self, run: Run, *, heartbeat: bool = False) -> int:
        """Write run's buffered records, a chunk per transaction; returns the rows written."""
        written = 0
        with run._flush_lock:
            queue = run._pending
            while True:
                n = min(len(queue), FLUSH_CHUNK_RECORDS)
                if n == 0 and not heartbeat:
                    return written
                records = [queue.popleft() for _ in range(n)]
                try:
                    written += self._write_chunk(run, records)
                except BaseException:
                    queue.extendleft(reversed(records))  # keep them; the next flush retries
                    raise
                heartbeat = False
                if n < FLUSH_CHUNK_RECORDS:
                    return written

    def _write_chunk(self, run: Run, records: list[tuple]) -> int:
        n_rows = sum(len(r[1]) for r in records)
        with self.store.write() as conn:
            row = conn.execute("SELECT metric_count FROM runs WHERE id = ?", (run.id,)).fetchone()
            if row is None:
                raise StoreError(f"run {run.alternative_name!r} was deleted from the store; "
                                 "its new metrics cannot be kept")
            # The stored count wins: another process may have logged to this run.
            base = row[0]
            if n_rows:
                conn.executemany(INSERT_METRICS, expand_rows(run.id, base, records))
            conn.execute("UPDATE runs SET metric_count = ?, heartbeat_at = ? WHERE id = ?",
                         (base + n_rows, time.time(), run.id))
        run._metric_count = base + n_rows
        return n_rows
