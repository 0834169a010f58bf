"""Run the REAL daemon (`python -m syncd.cli run`) as a subprocess and check what the REAL
server holds against the local store."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


class Daemon:
    """`syncd run` in a subprocess, with its own sd_notify socket to learn when it is READY."""

    def __init__(self, home: Path, config_dir: Path, server_url: str | None, token: str | None,
                 log_path: Path, **settings: Any) -> None:
        self.home, self.log_path = home, log_path
        self.env = dict(os.environ)
        self.env.update({"RUNSTORE_HOME": str(home), "RUNSTORE_CONFIG_DIR": str(config_dir),
                         "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"})
        if server_url:
            self.env["RUNSTORE_SERVER"] = server_url
        if token:
            self.env["RUNSTORE_TOKEN"] = token
        for key, value in settings.items():
            self.env[f"RUNSTORE_SYNCD_{key.upper()}"] = str(value)
        self.proc: subprocess.Popen | None = None
        self.extra_args: list[str] = []  # e.g. ["--from-dir", PATH]
        self._log = None
        self._sock: socket.socket | None = None
        self.messages: list[str] = []

    def start(self, wait_ready: bool = True, timeout_s: float = 20.0) -> Daemon:
        sock_path = self.log_path.with_suffix(f".{time.monotonic_ns()}.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self.env["NOTIFY_SOCKET"] = str(sock_path)
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in _cleanup
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "run", *self.extra_args],
                                     env=self.env,
                                     stdout=self._log, stderr=self._log, cwd=REPO_ROOT)
        if wait_ready:
            self.wait_message("READY=1", timeout_s)
        return self

    def wait_message(self, field: str, timeout_s: float = 20.0) -> str:
        """Wait for an sd_notify datagram containing ``field``; returns the datagram."""
        assert self._sock is not None
        deadline = time.monotonic() + timeout_s
        for message in self.messages:
            if field in message.split("\n"):
                return message
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"syncd exited ({self.proc.returncode}):\n{self.log()}")
            self._sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                message = self._sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.messages.append(message)
            if field in message.split("\n") or any(
                    line.startswith(field) for line in message.split("\n")):
                return message
        raise AssertionError(f"no {field!r} from syncd within {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 10.0) -> float:
        """SIGTERM; returns how long the daemon took to exit."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout_s)
        took = time.monotonic() - start
        self._cleanup()
        return took

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._sock is not None:
            path = self._sock.getsockname()
            self._sock.close()
            self._sock = None
            try:
                os.unlink(path)
            except (FileNotFoundError, TypeError):
                pass


def run_python(code: str, home: Path, *, background: bool = False,
               timeout_s: float = 120.0) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run ``code`` (the SDK writing runs) in a fresh interpreter with RUNSTORE_HOME=home."""
    env = {**os.environ, "RUNSTORE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-c", textwrap.dedent(code)]
    if background:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_runs(home: Path, n: int, rows: int = 20, *, prefix: str = "run",
              status: str = "finish", **create_kw: Any) -> list[str]:
    """Create ``n`` finished runs with ``rows`` metric rows each (in a subprocess); UUIDs."""
    kw = ", ".join(f"{k}={v!r}" for k, v in create_kw.items())
    code = f"""
        import runstore as em
        for i in range({n}):
            run = em.create_run(name='{prefix}%d' % i{', ' + kw if kw else ''})
            for step in range({rows}):
                run.log('train', {{'loss': 1.0 / (step + 1)}}, step=step)
            run.finish()
            print(run.uuid)
    """
    return run_python(code, home).stdout.split()


def local_runs(home: Path) -> dict[str, dict[str, Any]]:
    """uuid -> status, sync state and metric row count in the local store."""
    conn = sqlite3.connect(f"file:{home / 'runstore.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT r.uuid, r.status, s.state, s.last_error, "
            "(SELECT COUNT(*) FROM metrics m WHERE m.run_id = r.id) "
            "FROM runs r LEFT JOIN sync_state s ON s.run_id = r.id").fetchall()
    finally:
        conn.close()
    return {u: {"status": st, "state": state, "error": err, "rows": n}
            for u, st, state, err, n in rows}


def server_runs(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """uuid -> every copy the server holds (a list, so duplicates would show)."""
    db = data_dir / "server.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT r.uuid, r.complete, r.status, r.metric_count, "
            "(SELECT COUNT(*) FROM metrics m WHERE m.run_id = r.id), "
            "(SELECT COUNT(DISTINCT m.seq) FROM metrics m WHERE m.run_id = r.id) "
            "FROM runs r").fetchall()
    finally:
        conn.close()
    out: dict[str, list[dict[str, Any]]] = {}
    for uuid, complete, status, count, nrows, distinct in rows:
        out.setdefault(uuid, []).append({"complete": bool(complete), "status": status,
                                         "metric_count": count, "rows": nrows,
                                         "distinct_seq": distinct})
    return out


def assert_exactly_once(home: Path, data_dir: Path, expected: set[str] | None = None) -> None:
    """The server holds exactly the finished local runs: one complete copy, every row once,
    and each is marked synced locally."""
    local = local_runs(home)
    remote = server_runs(data_dir)
    finished = {u for u, r in local.items() if r["status"] != "Running"}
    if expected is not None:
        assert expected <= finished
    assert set(remote) == finished, (set(remote) ^ finished)
    for uuid in finished:
        copies = remote[uuid]
        assert len(copies) == 1, (uuid, copies)
        copy = copies[0]
        assert copy["complete"], (uuid, copy)
        assert copy["rows"] == copy["distinct_seq"] == copy["metric_count"] == \
            local[uuid]["rows"], (uuid, copy, local[uuid])
        assert copy["status"] == local[uuid]["status"]
        assert local[uuid]["state"] == "synced", (uuid, local[uuid])


def all_synced(home: Path, uuids: set[str] | None = None) -> bool:
    local = local_runs(home)
    wanted = uuids if uuids is not None else {u for u, r in local.items()
                                              if r["status"] != "Running"}
    return all(local.get(u, {}).get("state") == "synced" for u in wanted)
