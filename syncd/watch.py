"""Wake the daemon when the store changes: inotify (via watchdog) on the store directory.

Every commit to the database appends to ``runstore.db-wal`` (and a checkpoint or the last
connection closing touches ``runstore.db``), so a modification of either is "something may have
finished". The watcher only sets an event; the daemon decides what to do. Readers never touch
the -wal file, so the daemon's own queries do not wake it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from runstore.store import DB_NAME

WATCHED_NAMES = frozenset({DB_NAME, DB_NAME + "-wal"})


class _Handler(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            name = os.path.basename(os.fsdecode(path)) if path else ""
            if name in WATCHED_NAMES:
                self._wake.set()
                return


class StoreWatcher:
    """Sets ``wake`` whenever the store's database files change."""

    def __init__(self, home: Path, wake: threading.Event) -> None:
        self.home = home
        self.wake = wake
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        observer.schedule(_Handler(self.wake), str(self.home), recursive=False)
        observer.start()
        self._observer = observer

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout_s)
            self._observer = None

    def __enter__(self) -> StoreWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
