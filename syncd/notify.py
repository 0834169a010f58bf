"""The systemd notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG, STOPPING.

Speaks only when NOTIFY_SOCKET is set (systemd sets it for Type=notify units); otherwise
every call is a no-op. Datagrams go to an AF_UNIX socket; a leading '@' means the abstract
namespace.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends sd_notify messages to ``socket_path`` (None: a silent no-op)."""

    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None) -> None:
        self.socket_path = socket_path
        self.watchdog_interval_s: float | None = (
            watchdog_usec / 1e6 / 2 if watchdog_usec else None)  # ping at half the timeout
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for the service manager described by NOTIFY_SOCKET / WATCHDOG_USEC."""
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC") and (not pid or pid == str(os.getpid())):
            try:
                usec = int(env["WATCHDOG_USEC"])
            except ValueError:
                usec = None
        return cls(path, usec)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of newline-separated KEY=VALUE fields; False if not delivered."""
        if not self.socket_path:
            return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the daemon on a manager that is not reading: drop the message.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), address)
            return True
        except OSError:
            # The manager went away or the socket is full: never let this stop the daemon.
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
