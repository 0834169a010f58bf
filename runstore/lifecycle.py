"""Process state, all of it, at the bottom of the import graph: the default store, the writer
of each store, fork handling, and what happens to live runs at exit.

Why one module: Run, Artifact, the t9k functions (api.py) and the CLI all need "the store of
this process" and "the writer of that store"; keeping that state here (importing only store.py
and writer.py) lets every module above use it without importing each other in a circle.

At exit (normal, exception, sys.exit, SIGTERM) every run this process still has Running is
flushed and marked Error (t9k: the script ended without finish()). A forked child never ends,
nor writes the buffered rows of, the runs it inherited: it starts with empty buffers.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from runstore.store import Store, default_home, reap_dead_runs
from runstore.writer import Writer

_lock = threading.Lock()
_stores: dict[Path, Store] = {}
_writers: dict[Path, Writer] = {}
_exit_installed = False


def default_store() -> Store:
    """The store at RUNSTORE_HOME (or the user data dir), opened once per process."""
    home = default_home().resolve()
    with _lock:
        store = _stores.get(home)
        if store is None:
            store = _stores[home] = Store(home)
            reap_dead_runs(store)
        return store


def writer_for(store: Store) -> Writer:
    """The one writer (flush thread) of this process for a store."""
    with _lock:
        writer = _writers.get(store.home)
        if writer is None:
            writer = _writers[store.home] = Writer(store)
        return writer


def all_writers() -> list[Writer]:
    with _lock:
        return list(_writers.values())


def install_exit_handlers() -> None:
    """At exit (normal, exception, sys.exit, SIGTERM): flush, and mark unfinished runs Error."""
    global _exit_installed
    with _lock:
        if _exit_installed:
            return
        _exit_installed = True
    atexit.register(_at_exit)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _at_exit() -> None:
    for writer in all_writers():
        for run in writer.live_runs():
            try:
                if run._owner_pid != os.getpid():
                    writer.flush(run)  # a forked child: flush its own rows, never end the run
                elif run._status == "Running":
                    run._end_run("Error")
            except Exception as exc:  # at exit there is nobody to raise to
                print(f"runstore: could not close run {run.alternative_name}: {exc}",
                      file=sys.stderr)


def _after_fork_in_child() -> None:
    """Inherited runs keep their rows with the parent; the child starts with empty buffers and
    installs its own exit handlers when it starts a run."""
    global _lock, _exit_installed
    _lock = threading.Lock()
    _exit_installed = False
    for writer in _writers.values():
        writer._runs_lock = threading.Lock()
        for run in list(writer._runs.values()):
            run._pending.clear()
            run._flush_lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)
