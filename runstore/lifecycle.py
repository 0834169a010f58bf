"""Process lifecycle of live runs: exit (normal, exception, sys.exit, SIGTERM) and fork.

At exit every run this process still has Running is flushed and marked Error (t9k: the script
ended without finish()). A forked child never ends, nor writes the buffered rows of, the
runs it inherited.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any

_exit_installed = False
_exit_lock = threading.Lock()


def install_exit_handlers() -> None:
    """At exit (normal, exception, sys.exit, SIGTERM): flush, and mark unfinished runs Error."""
    global _exit_installed
    with _exit_lock:
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
    from runstore.api import all_writers

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
    global _exit_installed
    _exit_installed = False


os.register_at_fork(after_in_child=_after_fork_in_child)
