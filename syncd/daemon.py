"""The syncer: find finished runs not yet on the server and upload each through runstore.remote.

The loop (:func:`syncd.loop.run_forever`) only decides *when*: it wakes on store changes
(see watch.py), on a worker finishing, on the next scheduled retry, or on a slow fallback tick,
and each time calls :meth:`Syncer.sync_once`. *How* a run is uploaded is
``runstore.remote.upload_run``'s business; exactly-once rests on its protocol (claim by UUID,
offset chunks, finalize) and on the 'synced' mark it writes only after the server acknowledged
finalize.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

from runstore import syncstate
from runstore.errors import (
    NotLoggedInError,
    PermanentRemoteError,
    RemoteError,
    RunstoreError,
    TransientRemoteError,
)
from runstore.store import Store, reap_dead_runs
from syncd.schedule import Backoff, ServerHealth
from syncd.settings import Settings

log = logging.getLogger("syncd")

SDK_DEFAULT_TARGET = {"folder": "default", "make_folder": False, "conflict_strategy": "new"}
# Uploads still running this long after SIGTERM are abandoned (they resume on restart);
# systemd's default stop timeout is far longer, our promise is 5 s.
SHUTDOWN_GRACE_S = 3.5
# Per-request retries inside the client before it gives up and we schedule the run.
CLIENT_MAX_ATTEMPTS = 3
CLIENT_MAX_BACKOFF_S = 5.0


class ShutdownRequested(BaseException):
    """Raised inside an upload (from the client's sleep or the progress hook) on SIGTERM.

    A BaseException, so no ``except Exception`` on the way mistakes it for a failure.
    """


@dataclass
class PassResult:
    """What one pass did; ``ok`` is False if any run failed or must be retried."""

    synced: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    retrying: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.retrying or self.failed or self.interrupted)

    def merge(self, other: PassResult) -> None:
        for name in ("synced", "live", "retrying", "failed", "interrupted"):
            getattr(self, name).extend(getattr(other, name))


def target_for(entry: Any, settings: Settings) -> dict[str, Any]:
    """The run's own target where create_run() was given one, else the daemon's defaults.

    ``entry`` is a SyncEntry or a runs row. The store keeps no "not given" marker, so a field
    still at the SDK's default value takes the daemon's configured default for that field.
    """
    def get(name: str) -> Any:
        return entry[name] if isinstance(entry, sqlite3.Row) else getattr(entry, name)

    own = {"folder": get("folder"), "make_folder": bool(get("make_folder")),
           "conflict_strategy": get("conflict_strategy")}
    configured = {"folder": settings.folder, "make_folder": settings.make_folder,
                  "conflict_strategy": settings.conflict_strategy}
    return {k: (configured[k] if own[k] == SDK_DEFAULT_TARGET[k] else own[k]) for k in own}


def check_logged_in(settings: Settings) -> tuple[str, str]:
    """The configured (host, token); NotLoggedInError (with the fix) if either is missing."""
    if not (settings.host and settings.token):
        raise NotLoggedInError(
            "no server configured for syncd. Try: `runstore login --host URL --token TOKEN` "
            "as the user the service runs as, or set RUNSTORE_SERVER and RUNSTORE_TOKEN.")
    return settings.host, settings.token


def default_client_factory(settings: Settings, sleep: Callable[[float], None]) -> Any:
    """A runstore.remote.Client for the configured server (imported lazily)."""
    from runstore.remote import Client

    host, token = check_logged_in(settings)
    return Client(host, token, timeout_s=settings.timeout_s,
                  max_attempts=CLIENT_MAX_ATTEMPTS, max_backoff_s=CLIENT_MAX_BACKOFF_S,
                  sleep=sleep)


class Syncer:
    """Uploads due runs with bounded concurrency and schedules retries of the failures."""

    def __init__(self, store: Store, settings: Settings, *,
                 client_factory: Callable[[Settings, Callable[[float], None]], Any] | None = None,
                 upload: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 wake: threading.Event | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.wake = wake or threading.Event()
        self.stop = threading.Event()
        self.health = ServerHealth(settings.max_backoff_s, clock=clock)
        self.backoff = Backoff(settings.max_backoff_s)
        self._client_factory = client_factory or default_client_factory
        self._upload = upload
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency,
                                        thread_name_prefix="syncd-upload")
        self._lock = threading.Lock()
        self._inflight: dict[str, Future] = {}
        self._results = PassResult()
        self._live_pushed: dict[str, tuple[float, int]] = {}  # uuid -> (when, metric_count)
        self._changed: dict[str, int] = {}  # uuid -> uploads in a row that it outran
        self._clients = threading.local()
        self._all_clients: list[Any] = []

    # -- the pass ----------------------------------------------------------------------------
    def sync_once(self, *, wait: bool = True) -> PassResult:
        """One pass: reap crashed runs, start uploads of due runs into free slots.

        With ``wait`` (``syncd once``) it repeats until nothing is due and returns what
        happened; without, it returns at once and workers wake the loop when they finish.
        """
        total = PassResult()
        while True:
            started = self._dispatch()
            if not wait:
                return total
            self._drain()
            total.merge(self.take_results())
            if not started or self.stop.is_set():
                return total

    def _dispatch(self) -> int:
        if self.stop.is_set():
            return 0
        try:
            reaped = reap_dead_runs(self.store)
        except Exception:  # a store hiccup must not stop the daemon; the next pass retries
            log.exception("cannot check for crashed runs")
            reaped = []
        for name in reaped:
            log.info("run %s: its process died; marked Error, will be uploaded", name)
        now = self.clock()
        if not self.health.may_dispatch(now):
            return 0
        slots = 1 if self.health.state == "down" else self.settings.concurrency
        with self._lock:
            free = slots - len(self._inflight)
            busy = set(self._inflight)
        if free <= 0:
            return 0
        due = [e for e in syncstate.due_runs(self.store, now,
                                             only_auto_upload=self.settings.only_auto_upload)
               if e.run_uuid not in busy]
        # Fresh runs first: one that keeps failing does not hold up the rest.
        due.sort(key=lambda e: (e.attempts, e.run_id))
        started = 0
        for entry in due[:free]:
            self._submit(entry.run_uuid, self._sync_run, entry)
            started += 1
        free -= started
        if free > 0 and self.health.state != "down" and self.settings.live_interval_s > 0:
            started += self._dispatch_live(now, busy, free)
        return started

    def _dispatch_live(self, now: float, busy: set[str], free: int) -> int:
        """auto_upload runs still running: push their rows so far, at most every interval."""
        rows = self.store.read(
            "SELECT uuid, alternative_name, metric_count, folder, make_folder, "
            "conflict_strategy FROM runs "
            "WHERE status = 'Running' AND auto_upload = 1 ORDER BY id")
        started = 0
        live = {r["uuid"] for r in rows}
        for uuid in list(self._live_pushed):
            if uuid not in live:
                del self._live_pushed[uuid]
        for row in rows:
            if started >= free:
                break
            uuid = row["uuid"]
            last_at, last_count = self._live_pushed.get(uuid, (0.0, -1))
            if uuid in busy or now - last_at < self.settings.live_interval_s \
                    or row["metric_count"] == last_count:
                continue
            self._live_pushed[uuid] = (now, row["metric_count"])
            self._submit(uuid, self._push_live, uuid, row["alternative_name"],
                         target_for(row, self.settings))
            started += 1
        return started

    def next_wakeup(self, now: float) -> float:
        """Seconds until something is scheduled (a retry, a probe, a live push), capped."""
        delay = self.settings.fallback_interval_s
        if self.health.state == "down":
            delay = min(delay, max(0.0, self.health.probe_at - now))
        else:
            due_at = syncstate.next_due_at(self.store)
            if due_at is not None:
                delay = min(delay, max(0.0, due_at - now))
            if self._live_pushed and self.settings.live_interval_s > 0:
                delay = min(delay, self.settings.live_interval_s)
        return delay

    # -- workers -----------------------------------------------------------------------------
    def _submit(self, uuid: str, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._inflight[uuid] = self._pool.submit(self._guarded, uuid, fn, *args)

    def _guarded(self, uuid: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except ShutdownRequested:
            with self._lock:
                self._results.interrupted.append(uuid)
        except Exception:  # never lose a worker to a bug; the run stays due
            log.exception("run %s: unexpected error in the upload worker", uuid)
        finally:
            with self._lock:
                self._inflight.pop(uuid, None)
            self.wake.set()

    def _client(self) -> Any:
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._client_factory(self.settings, self._interruptible_sleep)
            self._clients.client = client
            with self._lock:
                self._all_clients.append(client)
        return client

    def _interruptible_sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise ShutdownRequested

    def _progress(self, *args: Any, **kwargs: Any) -> None:
        if self.stop.is_set():
            raise ShutdownRequested

    def _call_upload(self, uuid: str, **target: Any) -> Any:
        upload = self._upload
        if upload is None:
            from runstore.remote import upload_run
            upload = upload_run
        return upload(self.store, uuid, self._client(), progress=self._progress, **target)

    def _sync_run(self, entry: syncstate.SyncEntry) -> None:
        uuid, name = entry.run_uuid, entry.alternative_name
        if not syncstate.mark_uploading(self.store, uuid):
            return  # synced or failed meanwhile (another uploader, `syncd retry`)
        target = target_for(entry, self.settings)
        started = time.monotonic()
        try:
            result = self._call_upload(uuid, **target)
        except TransientRemoteError as exc:
            self._on_transient(entry, exc)
            return
        except PermanentRemoteError as exc:
            code = (f" (HTTP {exc.status_code})"
                    if exc.status_code and f"HTTP {exc.status_code}" not in str(exc) else "")
            message = f"{exc}{code}"
            syncstate.mark_failed(self.store, uuid, message)
            log.error("run %s: upload refused by the server%s: %s (once fixed: "
                      "`syncd retry %s`)", name, code, exc, name)
            with self._lock:
                self._results.failed.append((uuid, message))
            self._server_answered()
            return
        except RemoteError as exc:  # e.g. not logged in: nothing the run can fix by itself
            self._on_transient(entry, TransientRemoteError(str(exc)))
            return
        except RunstoreError as exc:
            # The local store lacks something the upload needs: retrying cannot fix it.
            syncstate.mark_failed(self.store, uuid, str(exc))
            log.error("run %s: cannot be uploaded: %s. Try: `syncd retry %s` once fixed",
                      name, exc, name)
            with self._lock:
                self._results.failed.append((uuid, str(exc)))
            return
        except Exception as exc:
            # A bug, not the run's fault: back off on the run's own schedule, never spin.
            log.exception("run %s: unexpected error while uploading", name)
            syncstate.mark_retry(self.store, uuid, f"{type(exc).__name__}: {exc}",
                                 self.clock() + self.backoff.delay(entry.attempts + 1))
            with self._lock:
                self._results.retrying.append((uuid, str(exc)))
            return
        self._server_answered()
        entry_now = syncstate.get(self.store, uuid)
        if getattr(result, "complete", True) or (entry_now and entry_now.state == "synced"):
            # (synced though not complete on the server: a newer, unfinished state that is
            # not this store's, e.g. the server's copy was already ahead of a restored store)
            log.info("run %s: synced to %s (%s, %s metric rows, %s blobs, %.2fs)", name,
                     getattr(result, "remote_path", "?"), getattr(result, "outcome", "?"),
                     getattr(result, "metrics_sent", "?"), getattr(result, "blobs_sent", "?"),
                     time.monotonic() - started)
            with self._lock:
                self._results.synced.append(uuid)
                self._changed.pop(uuid, None)
        else:
            # Changed while it went up (re-opened by load_run(), edited after its end): not
            # marked synced. Due again at once if it has ended (a Running run waits its end);
            # backing off if that keeps happening, so nothing can make syncd spin.
            with self._lock:
                times = self._changed[uuid] = self._changed.get(uuid, 0) + 1
            again = 0.0 if times < 3 else self.backoff.delay(times)
            syncstate.mark_retry(self.store, uuid, "the run changed while it went up",
                                 self.clock() + again)
            with self._lock:
                self._results.live.append(uuid)

    def _push_live(self, uuid: str, name: str, target: dict[str, Any]) -> None:
        try:
            result = self._call_upload(uuid, **target)
        except (TransientRemoteError, PermanentRemoteError) as exc:
            log.debug("run %s: live upload failed (the final upload retries): %s", name, exc)
            return
        self._server_answered()
        log.debug("run %s: live rows pushed (%s)", name, getattr(result, "metrics_sent", "?"))
        with self._lock:
            self._results.live.append(uuid)

    def _server_answered(self) -> None:
        was = self.health.state
        if self.health.succeeded() and was == "down":
            log.info("server %s is reachable again; resuming uploads", self.settings.host)

    def _on_transient(self, entry: syncstate.SyncEntry, exc: TransientRemoteError) -> None:
        uuid, name = entry.run_uuid, entry.alternative_name
        now = self.clock()
        was_up = self.health.state == "up"
        changed = self.health.failed(str(exc), getattr(exc, "retry_after", None))
        next_at = self.health.probe_at
        if was_up:
            # Others got through a moment ago: this run may be the problem, so it also backs
            # off on its own schedule and does not get in the way of the rest.
            next_at = max(next_at, now + self.backoff.delay(entry.attempts + 1,
                                                            getattr(exc, "retry_after", None)))
        syncstate.mark_retry(self.store, uuid, str(exc), next_at)
        syncstate.defer_pending(self.store, self.health.probe_at)
        with self._lock:
            self._results.retrying.append((uuid, str(exc)))
        if changed:
            waiting = syncstate.counts(self.store)
            log.warning("server %s unavailable: %s; %d run(s) waiting, next attempt in %.0fs",
                        self.settings.host, exc, waiting["pending"] + waiting["uploading"],
                        max(0.0, self.health.probe_at - now))
        else:
            log.debug("run %s: still failing (%s); next attempt in %.0fs", name, exc,
                      max(0.0, next_at - now))

    # -- results and shutdown ----------------------------------------------------------------
    def take_results(self) -> PassResult:
        with self._lock:
            out, self._results = self._results, PassResult()
        return out

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def _drain(self, timeout_s: float | None = None) -> bool:
        """Wait for the uploads in flight (up to ``timeout_s``); True if none is left."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                futures = list(self._inflight.values())
            if not futures:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            wait_futures(futures, timeout=remaining, return_when=FIRST_COMPLETED)

    def shutdown(self, grace_s: float = SHUTDOWN_GRACE_S) -> bool:
        """Stop: interrupt uploads at their next step, wait up to ``grace_s``.

        Returns False if some upload had to be abandoned mid-request; nothing is lost (the
        run stays 'uploading', which is due on restart, and the server resumes it by UUID).
        """
        self.stop.set()
        done = self._drain(grace_s)
        self._pool.shutdown(wait=done, cancel_futures=True)
        if done:
            with self._lock:
                clients = list(self._all_clients)
            for client in clients:
                close = getattr(client, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # closing is best effort at exit
                        log.debug("closing a client failed", exc_info=True)
        return done
