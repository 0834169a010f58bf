"""Drop-directory mode: the daemon's link across an air gap is a directory (docs/AIRGAP.md).

``syncd run --to-dir PATH`` (or ``[syncd] target = "dir:PATH"``) on the air-gapped node writes
a bundle into PATH whenever a run finishes or changes after its end, and every
``bundle_interval_s`` while runs are live and logging. ``syncd run --from-dir PATH`` on the
connected side imports each committed bundle that appears in PATH, moves it to ``done/``
(or to ``failed/`` with ``<name>.reason``), and uploads the runs that are whole.

How a bundle is written, read and uploaded is runstore.bundle's and runstore.remote's
business; this module only decides when, and what happens to the files in the drop dir.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runstore.bundle import (
    BundleError,
    BundleIncompleteError,
    export_bundle,
    find_bundles,
    staging_store,
    upload_ready,
)
from runstore.bundle.export import pending_changes
from runstore.bundle.importer import STAGING_DIR, merge_bundle
from runstore.bundle.importer import gaps as import_gaps
from runstore.errors import RemoteError, RunstoreError
from runstore.store import Store, reap_dead_runs
from syncd.notify import Notifier
from syncd.settings import Settings

log = logging.getLogger("syncd")

DONE, FAILED = "done", "failed"
# A committed bundle whose files are still short may be mid-copy (cp writes COMMIT whenever
# it gets to it): wait this long after its last change before calling it failed.
SETTLE_S = 60.0


def drop_dir(settings: Settings, to_dir: Path | None) -> Path | None:
    """The export directory: --to-dir, else ``[syncd] target = "dir:PATH"``, else None."""
    if to_dir is not None:
        return to_dir
    if settings.target and settings.target.startswith("dir:"):
        return Path(settings.target[4:]).expanduser()
    return None


class Exporter:
    """Writes a bundle when a run has ended or changed, or on schedule for live rows."""

    def __init__(self, store: Store, out: Path, interval_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.out, self.interval_s, self.clock = store, out, interval_s, clock
        self.last_export = clock()
        remove_stale_partials(out)

    def sync_once(self) -> Path | None:
        """One pass; the path of the bundle written, if any."""
        for name in reap_dead_runs(self.store):
            log.info("run %s: its process died; marked Error, goes in the next bundle", name)
        changes = pending_changes(self.store)
        ended = any(e.status != "Running" for e in changes)
        due = self.clock() - self.last_export >= self.interval_s
        if not changes or not (ended or due):
            return None
        result = export_bundle(self.store, self.out)
        self.last_export = self.clock()
        if result is None:
            return None
        log.info("bundle %d written: %s (%d run(s), %d metric rows, %d blob(s))",
                 result.manifest.sequence, result.path, len(result.runs), result.metric_rows,
                 result.blobs)
        return result.path

    def next_wakeup(self) -> float:
        return max(0.5, self.interval_s - (self.clock() - self.last_export))


def export_once(home: Path, out: Path) -> Path | None:
    """`syncd once` in drop mode: reap crashed runs, write a bundle of what changed."""
    store = Store(home)
    try:
        reap_dead_runs(store)
        result = export_bundle(store, out)
        return result.path if result else None
    finally:
        store.close()


class Importer:
    """Imports committed bundles that appear in a drop dir, then uploads what is whole."""

    def __init__(self, store: Store, drop: Path, client_factory: Callable[[], Any],
                 settle_s: float = SETTLE_S, clock: Callable[[], float] = time.time) -> None:
        self.store, self.drop, self.settle_s, self.clock = store, drop, settle_s, clock
        self._client_factory = client_factory
        self._client: Any = None
        self.uploads_due = True

    def sync_once(self) -> dict[str, list[str]]:
        """One pass: {'done': [...], 'failed': [...], 'waiting': [...]} bundle names."""
        out: dict[str, list[str]] = {DONE: [], FAILED: [], "waiting": []}
        for bundle in find_bundles(self.drop):
            if bundle.name in (DONE, FAILED):
                continue
            if not (bundle / "COMMIT").exists():
                out["waiting"].append(bundle.name)  # being written or copied
                continue
            try:
                manifest, merged = merge_bundle(self.store, bundle)
            except BundleIncompleteError as exc:
                if self.clock() - _last_change(bundle) < self.settle_s:
                    out["waiting"].append(bundle.name)
                    continue
                self._move(bundle, FAILED, str(exc))
                out[FAILED].append(bundle.name)
                continue
            except BundleError as exc:
                self._move(bundle, FAILED, str(exc))
                out[FAILED].append(bundle.name)
                continue
            log.info("bundle %d of store %s %s: %s", manifest.sequence,
                     manifest.source_store[:12], "imported" if merged else "already imported",
                     bundle.name)
            self._move(bundle, DONE, None)
            out[DONE].append(bundle.name)
            self.uploads_due = True
        if self.uploads_due:
            self._upload()
        return out

    def _upload(self) -> None:
        try:
            if self._client is None:
                self._client = self._client_factory()
            results = upload_ready(self.store, self._client)
        except RemoteError as exc:
            log.warning("uploading imported runs failed (retried next pass): %s", exc)
            return
        transient = False
        for r in results:
            if r.outcome == "failed":
                log.error("run %s: %s", r.alternative_name, r.detail)
                transient = transient or r.transient
            elif r.outcome == "held":
                log.info("run %s %s", r.alternative_name, r.detail)
            else:
                log.info("run %s: %s %s", r.alternative_name, r.outcome, r.remote_path)
        self.uploads_due = transient  # held runs wait for a new bundle, not for time

    def _move(self, bundle: Path, where: str, reason: str | None) -> None:
        target_dir = self.drop / where
        target_dir.mkdir(exist_ok=True)
        target = target_dir / bundle.name
        if target.exists():  # the same bundle dropped twice
            target = target_dir / f"{bundle.name}.{int(self.clock() * 1000)}"
        if reason is not None:
            (target_dir / f"{target.name}.reason").write_text(reason + "\n")
            log.error("bundle %s moved to %s/: %s", bundle.name, where, reason)
        os.replace(bundle, target)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _last_change(bundle: Path) -> float:
    return max((p.stat().st_mtime for p in [bundle, *bundle.rglob("*")]), default=0.0)


def run_drop(settings: Settings, *, to_dir: Path | None = None, from_dir: Path | None = None,
             client_factory: Callable[[], Any] | None = None,
             notifier: Notifier | None = None) -> int:
    """The foreground daemon in drop mode, until SIGTERM/SIGINT. Returns an exit code."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    from syncd.watch import StoreWatcher

    notifier = notifier or Notifier.from_env()
    stop = threading.Event()
    wake = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker: Exporter | Importer
    if to_dir is not None:
        to_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.home)
        worker = Exporter(store, to_dir, settings.bundle_interval_s)
        watcher: Any = StoreWatcher(settings.home, wake)
        watcher.start()
        what = f"writing bundles of {settings.home} into {to_dir}"
    else:
        assert from_dir is not None and client_factory is not None
        from_dir.mkdir(parents=True, exist_ok=True)
        store = staging_store(settings.home)
        worker = Importer(store, from_dir, client_factory)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                wake.set()

        watcher = Observer()
        watcher.daemon = True
        watcher.schedule(Handler(), str(from_dir), recursive=True)
        watcher.start()
        what = f"importing bundles from {from_dir} to {settings.host}"
    log.info("syncd %s (drop mode) %s", os.getpid(), what)
    ready = False
    try:
        while not stop.is_set():
            wake.clear()
            try:
                worker.sync_once()
            except (RunstoreError, OSError) as exc:  # a disk or store hiccup: next pass
                log.error("%s; retried in %.0fs", exc, settings.fallback_interval_s)
            if not ready:
                notifier.ready("drop mode")
                ready = True
            timeout = settings.fallback_interval_s
            if isinstance(worker, Exporter):
                timeout = min(timeout, worker.next_wakeup())
            elif worker.uploads_due:
                timeout = min(timeout, 5.0)
            if wake.wait(timeout) and not stop.is_set():
                stop.wait(0.2)  # a burst of changes (a copy in progress) wakes us once
    finally:
        notifier.stopping("stopping")
        watcher.stop()
        if isinstance(worker, Importer):
            worker.close()
        store.close()
    log.info("stopped")
    return 0


def remove_stale_partials(out: Path, older_than_s: float = 3600.0) -> None:
    """Remove ``.partial-*`` bundles left by an exporter killed mid-write (never committed)."""
    now = time.time()
    for p in out.glob(".partial-*"):
        if now - p.stat().st_mtime > older_than_s:
            shutil.rmtree(p, ignore_errors=True)


def bundle_status(home: Path) -> dict[str, Any]:
    """Per run: the bundle it last went out in (this store), and imported runs' state."""
    store = Store(home)
    try:
        exported = [dict(r) for r in store.read(
            "SELECT r.alternative_name, r.status, w.sequence AS bundle, "
            "w.rows_exported AS rows FROM bundle_watermarks w JOIN runs r ON r.id = w.run_id "
            "ORDER BY r.id")]
    finally:
        store.close()
    imported: list[dict[str, Any]] = []
    if (home / STAGING_DIR / "runstore.db").exists():
        staging = staging_store(home)
        try:
            imported = [dict(r) for r in staging.read(
                "SELECT r.alternative_name, r.status, o.sequence AS bundle, "
                "COALESCE(s.state, 'pending') AS state, s.remote_path FROM runs r "
                "LEFT JOIN bundle_run_origin o ON o.run_id = r.id "
                "LEFT JOIN sync_state s ON s.run_id = r.id ORDER BY r.id")]
            gaps = import_gaps(staging)
        finally:
            staging.close()
    else:
        gaps = []
    return {"exported": exported, "imported": imported, "gaps": gaps}


def render_bundle_status(bundles: dict[str, Any] | None) -> list[str]:
    """The lines `syncd status` adds for bundles (none when there are none)."""
    if not bundles:
        return []
    lines = []
    if bundles["exported"]:
        lines += ["", "exported in bundles (this store):"]
        lines += [f"  {r['alternative_name']}  {r['status']}  exported in bundle {r['bundle']} "
                  f"(rows 0-{r['rows']})" for r in bundles["exported"]]
    if bundles["imported"]:
        lines += ["", f"imported from bundles ({STAGING_DIR}/):"]
        for r in bundles["imported"]:
            where = f"  {r['remote_path']}" if r["remote_path"] else ""
            lines.append(f"  {r['alternative_name']}  {r['status']}  imported from bundle "
                         f"{r['bundle']}  {r['state']}{where}")
    lines += [f"gap: {g}" for g in bundles["gaps"]]
    return lines
