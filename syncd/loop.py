"""The foreground daemon loop: wake, call :meth:`Syncer.sync_once`, report to systemd, repeat.

It only decides *when* to sync (store changes, a worker finishing, the next scheduled retry, the
watchdog, a slow fallback tick); what a pass does is :class:`syncd.daemon.Syncer`'s business.
SIGTERM/SIGINT stop it within the syncer's shutdown grace.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from runstore import syncstate
from runstore.store import Store
from syncd.daemon import Syncer, check_logged_in
from syncd.notify import Notifier
from syncd.schedule import ServerHealth
from syncd.settings import Settings

log = logging.getLogger("syncd")

# A burst of commits (a run finishing flushes, then updates its status) wakes us once.
COALESCE_S = 0.02


def status_line(store: Store, health: ServerHealth) -> str:
    """The STATUS= text for systemd: queue figures and the server's state."""
    c = syncstate.counts(store)
    text = (f"pending {c['pending']}, uploading {c['uploading']}, synced {c['synced']}, "
            f"failed {c['failed']}, running {c['running']}; server {health.state}")
    if health.state == "down":
        text += f" (next probe in {max(0, health.probe_at - time.time()):.0f}s)"
    return text


def run_forever(settings: Settings, *, notifier: Notifier | None = None,
                install_signals: bool = True,
                client_factory: Callable[..., Any] | None = None) -> int:
    """The foreground daemon: watch, sync, repeat until SIGTERM/SIGINT. Returns an exit code.

    The caller holds the store's lock.
    """
    from syncd.watch import StoreWatcher

    notifier = notifier or Notifier.from_env()
    store = Store(settings.home)
    wake = threading.Event()
    syncer = Syncer(store, settings, wake=wake, client_factory=client_factory)
    if client_factory is None:
        check_logged_in(settings)  # fail at start, not at the first finished run

    def on_signal(signum: int, frame: Any) -> None:
        syncer.stop.set()
        wake.set()

    if install_signals:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    watcher = StoreWatcher(settings.home, wake)
    watcher.start()
    log.info("syncd %s watching %s, uploading to %s (concurrency %d, %s)", os.getpid(),
             settings.home, settings.host, settings.concurrency,
             "auto_upload runs only" if settings.only_auto_upload else "all finished runs")
    last_status = ""
    last_ping = 0.0
    ready = False
    try:
        while not syncer.stop.is_set():
            wake.clear()
            syncer.sync_once(wait=False)
            syncer.take_results()  # the daemon logs as it goes; results matter for `once`
            status = status_line(store, syncer.health)
            if not ready:
                notifier.ready(status)
                ready = True
            elif status != last_status:
                notifier.status(status)
            last_status = status
            timeout = syncer.next_wakeup(time.time())
            if notifier.watchdog_interval_s:
                mono = time.monotonic()
                if mono - last_ping >= notifier.watchdog_interval_s / 2:
                    notifier.watchdog()
                    last_ping = mono
                timeout = min(timeout, notifier.watchdog_interval_s / 2)
            if wake.wait(timeout) and not syncer.stop.is_set():
                syncer.stop.wait(COALESCE_S)
    finally:
        notifier.stopping("stopping")
        log.info("stopping: %d upload(s) in flight", syncer.inflight())
        watcher.stop()
        clean = syncer.shutdown()
        if not clean:
            log.warning("uploads still in flight were abandoned; they resume on restart")
            logging.shutdown()
            os._exit(0)  # worker threads stuck in a request must not hold up the exit
        store.close()
    log.info("stopped")
    return 0
