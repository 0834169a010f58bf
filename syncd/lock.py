"""One daemon per store: an exclusive, non-blocking flock on ``<store>/syncd.lock``.

flock() locks die with the process (even on SIGKILL), so a stale lock file never keeps a
restarted daemon out; the pid written into the file is only for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from syncd.errors import AlreadyRunningError

LOCK_NAME = "syncd.lock"


class DaemonLock:
    """The held lock; release() (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # no stale pid for `syncd status` to report
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DaemonLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_pid(path: Path) -> int | None:
    """The pid recorded by the process holding (or last holding) the lock, if readable."""
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def acquire(home: Path) -> DaemonLock:
    """Take the store's daemon lock or raise AlreadyRunningError naming the holder."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = holder_pid(path)
        who = f" (pid {pid})" if pid else ""
        raise AlreadyRunningError(
            f"another syncd{who} is already running for the store {str(home)!r}; "
            "only one daemon per store may run. Try: `syncd status` to see its queue, "
            "or stop it first (systemctl stop runstore-syncd)."
        ) from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DaemonLock(path, fd)


def running_pid(home: Path) -> int | None:
    """The pid of the live daemon of this store, judged without touching the lock."""
    pid = holder_pid(home / LOCK_NAME)
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
