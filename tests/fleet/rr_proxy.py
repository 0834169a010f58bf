"""A round-robin TCP load balancer for the fleet tests: 127.0.0.1:<port> -> one of several
server replicas, the next one for each new connection, skipping a replica that refuses the
connection (stopped or killed), as a TCP load balancer with health checks would.

    with RoundRobinProxy([r.port for r in replicas]) as lb:
        lb.url                                   # what the uploaders use
        lb.connections                           # per-replica count of connections sent
"""

from __future__ import annotations

import itertools
import socket
from collections import Counter

from tests.server_harness import FaultProxy


class RoundRobinProxy(FaultProxy):
    """FaultProxy's pumps (no faults armed) behind a round-robin choice of upstream."""

    thread_name = "rrproxy"

    def __init__(self, target_ports: list[int]) -> None:
        super().__init__(target_ports[0])
        self.targets = [("127.0.0.1", p) for p in target_ports]
        self._next = itertools.cycle(range(len(self.targets)))
        self.connections: Counter = Counter()

    def _connect(self) -> socket.socket | None:
        for _ in range(len(self.targets)):
            i = next(self._next)
            try:
                upstream = socket.create_connection(self.targets[i], timeout=5)
            except OSError:
                continue
            self.connections[i] += 1
            return upstream
        return None

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect()
            if upstream is None:  # every replica down: the client retries
                self.hang_up(client)
                continue
            upstream.settimeout(None)
            # No Nagle: a request's head and body arrive as separate writes; held back, the
            # second waits for a delayed ACK (40 ms per request).
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, upstream))
            self.pump(self, client, upstream).start()
