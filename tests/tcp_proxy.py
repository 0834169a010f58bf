"""The socket plumbing the test proxies share (tests/server_harness.py FaultProxy and
tests/syncd/proxy.py ChaosProxy): a listener on 127.0.0.1, one upstream connection per client,
two pump threads per connection, and rules that fire on the first bytes of a matching request.

A subclass says what its pumps do (``pump``), how a killed connection's sockets are closed
(``hang_up``: a reset or a FIN), and how a fired rule is counted (``_fired``).
"""

from __future__ import annotations

import socket
import threading
from typing import Any, ClassVar, Protocol


class Rule(Protocol):
    pattern: bytes
    times: int


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # SHUT_RD wakes the other pump thread blocked in recv() without sending a FIN.
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    close_quietly(sock)


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def shut_and_close(sock: socket.socket) -> None:
    """Send the FIN now and close."""
    # shutdown() first: it wakes a thread blocked in recv()/accept() on this socket and sends
    # the FIN now (close() alone does neither while another thread is inside a call on it).
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    close_quietly(sock)


class Pump:
    """One proxied connection: a client->upstream thread (``_up``) and the reverse (``_down``)."""

    def __init__(self, proxy: TCPProxy, client: socket.socket, upstream: socket.socket):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.dead = threading.Event()

    def start(self) -> None:
        name = self.proxy.thread_name
        threading.Thread(target=self._up, daemon=True, name=f"{name}-up").start()
        threading.Thread(target=self._down, daemon=True, name=f"{name}-down").start()

    def _kill(self) -> None:
        if not self.dead.is_set():
            self.dead.set()
            self.proxy.hang_up(self.client)
            self.proxy.hang_up(self.upstream)

    def _up(self) -> None:
        raise NotImplementedError

    def _down(self) -> None:
        raise NotImplementedError


class TCPProxy:
    """127.0.0.1:<port> -> target: accepts, connects upstream, hands both sockets to a Pump."""

    pump: ClassVar[type[Pump]]
    thread_name: ClassVar[str] = "proxy"
    # How a killed (or never connected) connection's sockets are closed.
    hang_up: ClassVar[Any] = staticmethod(shut_and_close)
    # How the proxy's remaining sockets are closed at stop().
    close_at_stop: ClassVar[Any] = staticmethod(shut_and_close)

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port or 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._rules: list[Any] = []
        self._lock = threading.Lock()
        self._refuse = False
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name=self.thread_name,
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TCPProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closed.set()
        shut_and_close(self._listener)  # shutdown wakes accept() (close alone does not)
        with self._lock:
            socks = list(self._sockets)
            self._sockets.clear()
        for s in socks:
            self.close_at_stop(s)
        if self._thread.is_alive():
            self._thread.join(5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take(self, data: bytes) -> Any:
        """The first rule with times left whose pattern is in ``data`` (one use taken), or None."""
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and rule.pattern in data:
                    rule.times -= 1
                    self._fired(rule)
                    return rule
        return None

    def _fired(self, rule: Any) -> None:
        """Count a rule that fired (called under the lock)."""

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refuse:
                reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                self.hang_up(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            self.pump(self, client, upstream).start()
