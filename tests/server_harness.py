"""Start the REAL runstore server as a subprocess for tests, and a faulty TCP proxy in front.

Stable API (other test suites import it)::

    from tests.server_harness import ServerProcess, FaultProxy, free_port

    with ServerProcess(tmp_path / "server") as server:    # starts; stops on exit
        token = server.add_user("alice")                   # `runstore user add alice --data ...`
        server.url                                         # 'http://127.0.0.1:<port>'
        server.kill()                                      # SIGKILL, no cleanup
        server.start()                                     # same port, same data dir
        server.restart()                                   # terminate + start
        server.revoke_user("alice")                        # `runstore user revoke alice`
        server.stop()                                      # SIGTERM, then SIGKILL after 10 s
        server.log_text()                                  # what the server printed

    ServerProcess(data_dir, port=None, *, host="127.0.0.1", startup_timeout_s=30.0,
                  extra_env=None, database_url=None)
    database_url: passed as `--database URL` to `serve` and to the `user ...` commands (the
    tables live there, e.g. a PostgreSQL from tests/pg_harness.py; blobs stay in data_dir).
    .start() waits until GET /api/v1/health answers 200, with a deadline (never a blind sleep)
    and fails with the server's log if the process exits or the deadline passes.

    with FaultProxy(server.port) as proxy:                 # 127.0.0.1:<free port> -> server
        proxy.url
        proxy.lose_response(b"/metrics", times=1)          # forward the request whose first
                                                           # bytes contain the pattern, then cut
                                                           # the connection when the answer comes
                                                           # (a lost acknowledgement)
        proxy.cut_request(b"PATCH /api/v1/uploads", after_bytes=3_000_000, times=1)
                                                           # forward only the first N bytes of
                                                           # such a request, then reset
        proxy.refuse_connections(True)                     # accept and immediately reset
        proxy.faults_triggered                             # how many faults fired so far

Pytest fixtures ``server`` (a started ServerProcess in tmp_path) and ``alice`` (its user
token) live in tests/server/conftest.py and tests/remote/conftest.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.tcp_proxy import Pump, TCPProxy, close_quietly, reset

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from runstore.cli import main; sys.exit(main())"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def run_cli(*args: str, extra_env: dict[str, str] | None = None,
            timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Run `runstore ARGS...` in a subprocess; returns the completed process (text mode)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(extra_env),
                          cwd=REPO_ROOT, timeout=timeout_s)


class ServerProcess:
    """A `runstore serve` subprocess on 127.0.0.1 with its own data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], port: int | None = None, *,
                 host: str = "127.0.0.1", startup_timeout_s: float = 30.0,
                 extra_env: dict[str, str] | None = None,
                 database_url: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.extra_env = extra_env
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _database_args(self) -> list[str]:
        return ["--database", self.database_url] if self.database_url else []

    def start(self) -> ServerProcess:
        """Start (or start again on the same port and data dir) and wait for health."""
        if self.running():
            return self
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--data", str(self.data_dir), "--host", self.host,
                 "--port", str(self.port), *self._database_args()],
                stdout=log, stderr=subprocess.STDOUT, env=_env(self.extra_env), cwd=REPO_ROOT,
                start_new_session=True)
        finally:
            log.close()
        self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.02
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"runstore serve exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()[-4000:]}")
            try:
                r = httpx.get(f"{self.url}/api/v1/health", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"runstore serve not healthy after {self.startup_timeout_s}s:"
                                   f"\n{self.log_text()[-4000:]}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL if needed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to clean up."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, "--data", str(self.data_dir), *self._database_args(),
                       extra_env=self.extra_env)

    def add_user(self, name: str) -> str:
        """`runstore user add NAME --data DIR`; returns the printed token."""
        done = self.cli("user", "add", name)
        if done.returncode != 0:
            raise RuntimeError(f"user add {name} failed: {done.stderr.strip()}")
        return done.stdout.strip().splitlines()[-1]

    def new_token(self, name: str) -> str:
        done = self.cli("user", "token", name)
        if done.returncode != 0:
            raise RuntimeError(f"user token {name} failed: {done.stderr.strip()}")
        return done.stdout.strip().splitlines()[-1]

    def revoke_user(self, name: str, token_id: str | None = None) -> None:
        args = ["user", "revoke", name] + (["--token-id", token_id] if token_id else [])
        done = self.cli(*args)
        if done.returncode != 0:
            raise RuntimeError(f"user revoke {name} failed: {done.stderr.strip()}")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Fault:
    def __init__(self, kind: str, pattern: bytes, times: int, after_bytes: int = 0) -> None:
        self.kind, self.pattern, self.times, self.after_bytes = kind, pattern, times, after_bytes


class _Connection(Pump):
    """One proxied connection: faults decided per request start; a fault resets both ends."""

    proxy: FaultProxy

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket):
        super().__init__(proxy, client, upstream)
        self.doomed_response = False
        self.cut_after: int | None = None

    def _up(self) -> None:
        sent_in_request = 0
        try:
            while not self.dead.is_set():
                data = self.client.recv(65536)
                if not data:
                    break
                if self.cut_after is None and not self.doomed_response:
                    fault = self.proxy._take(data)
                    if fault is not None and fault.kind == "lose_response":
                        self.doomed_response = True
                    elif fault is not None:
                        self.cut_after, sent_in_request = fault.after_bytes, 0
                if self.cut_after is not None:
                    room = self.cut_after - sent_in_request
                    if len(data) >= room:
                        if room > 0:
                            self.upstream.sendall(data[:room])
                        self._kill()
                        return
                    sent_in_request += len(data)
                self.upstream.sendall(data)
        except OSError:
            pass
        self._kill()

    def _down(self) -> None:
        try:
            while not self.dead.is_set():
                data = self.upstream.recv(65536)
                if not data:
                    break
                if self.doomed_response:
                    self._kill()
                    return
                self.client.sendall(data)
        except OSError:
            pass
        self._kill()


class FaultProxy(TCPProxy):
    """A real TCP proxy on 127.0.0.1 that forwards to a target port and injects faults."""

    pump = _Connection
    thread_name = "faultproxy"
    hang_up = staticmethod(reset)
    close_at_stop = staticmethod(close_quietly)

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        super().__init__(target_port, target_host=target_host, port=port)
        self.faults_triggered = 0

    def start(self) -> FaultProxy:
        super().start()
        return self

    def lose_response(self, pattern: bytes, times: int = 1) -> None:
        self._add(_Fault("lose_response", pattern, times))

    def cut_request(self, pattern: bytes, after_bytes: int, times: int = 1) -> None:
        self._add(_Fault("cut_request", pattern, times, after_bytes))

    def refuse_connections(self, refuse: bool = True) -> None:
        self._refuse = refuse

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _fired(self, rule: _Fault) -> None:
        self.faults_triggered += 1
