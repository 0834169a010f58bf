"""A small real HTTP-aware TCP proxy for the faults a healthy local server never shows:
canned 5xx/429 answers, a hung request, and "the server answered, and at that instant the
daemon dies" (a callback between the server's commit and the client seeing the answer)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from tests.tcp_proxy import Pump, TCPProxy


@dataclass
class Rule:
    kind: str  # 'answer' | 'hang' | 'on_response'
    pattern: bytes
    times: int
    status: int = 503
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b'{"detail": "injected by the test proxy"}'
    callback: Callable[[], None] | None = None


_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 404: "Not Found"}


class _Pair(Pump):
    proxy: ChaosProxy

    def __init__(self, proxy: ChaosProxy, client: socket.socket, upstream: socket.socket):
        super().__init__(proxy, client, upstream)
        self.doomed: Rule | None = None

    def _up(self) -> None:
        try:
            while not self.dead.is_set():
                data = self.client.recv(65536)
                if not data:
                    break
                rule = None if self.doomed else self.proxy._take(data)
                if rule is None:
                    self.upstream.sendall(data)
                    continue
                if rule.kind == "on_response":
                    self.doomed = rule
                    self.upstream.sendall(data)
                    continue
                self._drain_request(data)
                if rule.kind == "hang":
                    while self.client.recv(65536):  # until the client times out and closes
                        pass
                    break
                self._send_answer(rule)
                break
        except OSError:
            pass
        self._kill()

    def _drain_request(self, data: bytes) -> None:
        """Read the rest of the request, so closing afterwards is not a reset."""
        while b"\r\n\r\n" not in data:
            more = self.client.recv(65536)
            if not more:
                return
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        remaining = length - len(body)
        while remaining > 0:
            more = self.client.recv(min(65536, remaining))
            if not more:
                return
            remaining -= len(more)

    def _send_answer(self, rule: Rule) -> None:
        reason = _REASONS.get(rule.status, "Error")
        lines = [f"HTTP/1.1 {rule.status} {reason}", "Content-Type: application/json",
                 f"Content-Length: {len(rule.body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in rule.headers]
        self.client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + rule.body)
        self.client.shutdown(socket.SHUT_WR)

    def _down(self) -> None:
        try:
            while not self.dead.is_set():
                data = self.upstream.recv(65536)
                if not data:
                    break
                if self.doomed is not None:
                    callback = self.doomed.callback
                    if callback is not None:
                        callback()
                    break
                self.client.sendall(data)
        except OSError:
            pass
        self._kill()


class ChaosProxy(TCPProxy):
    """127.0.0.1:<port> -> target; rules fire on the first bytes of a matching request."""

    pump = _Pair
    thread_name = "chaosproxy"

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.triggered: list[str] = []

    def answer(self, pattern: bytes, status: int, times: int = 1,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer matching requests with ``status`` without forwarding them."""
        self._add(Rule("answer", pattern, times, status, headers))

    def hang(self, pattern: bytes, times: int = 1) -> None:
        """Swallow matching requests and never answer (until the client gives up)."""
        self._add(Rule("hang", pattern, times))

    def on_response(self, pattern: bytes, callback: Callable[[], None], times: int = 1) -> None:
        """Forward; when the server's answer arrives, run ``callback`` and drop the answer."""
        self._add(Rule("on_response", pattern, times, callback=callback))

    def pending_rules(self) -> int:
        with self._lock:
            return sum(r.times for r in self._rules)

    def start(self) -> ChaosProxy:
        super().start()
        return self

    def _fired(self, rule: Rule) -> None:
        self.triggered.append(rule.kind)
