"""The main job, end to end on embedded defaults (what `make demo` runs).

1. starts a local `runstore serve` (SQLite + blob dir) on 127.0.0.1 and creates a user;
2. logs in, starts the `syncd` daemon;
3. trains three runs with a t9k.em script whose only change is `import runstore as em`;
4. shows them locally: `runstore ls`, `runstore describe -d`, a question in `runstore sql`;
5. waits until syncd has uploaded them by itself, then lists them on the server;
6. stops everything it started. Everything lives under ./.demo (removed at the start).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def sh(*args: str, env: dict[str, str], capture: bool = False) -> str:
    print("$ " + " ".join(a if " " not in a else repr(a) for a in args), flush=True)
    proc = subprocess.run(args, env=env, text=True, check=False,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.stdout or ""


def wait_for(what: str, predicate, timeout_s: float = 60.0, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise SystemExit(f"demo: timed out after {timeout_s:.0f} s waiting for {what}")


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    env = {**os.environ, "RUNSTORE_HOME": str(DEMO / "node-store"),
           "RUNSTORE_CONFIG_DIR": str(DEMO / "config"), "PYTHONUNBUFFERED": "1"}
    env.pop("RUNSTORE_SERVER", None)
    env.pop("RUNSTORE_TOKEN", None)
    runstore, syncd = str(BIN / "runstore"), str(BIN / "syncd")
    started: list[subprocess.Popen] = []
    try:
        banner("start a local server (embedded SQLite + blob directory)")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server_log = open(DEMO / "server.log", "w")  # noqa: SIM115
        server = subprocess.Popen([runstore, "serve", "--data", str(DEMO / "server-data"),
                                   "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=server_log, stderr=subprocess.STDOUT)
        started.append(server)

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the server to answer /api/v1/health", healthy)
        print(f"server up at {url}")
        token = sh(runstore, "user", "add", "alice", "--data", str(DEMO / "server-data"),
                   env=env, capture=True).strip().splitlines()[-1].strip()
        sh(runstore, "login", "--host", url, "--token", token, env=env)

        banner("start the sync daemon (what systemd would run)")
        syncd_log = open(DEMO / "syncd.log", "w")  # noqa: SIM115
        daemon = subprocess.Popen([syncd, "run"], env=env, stdout=syncd_log,
                                  stderr=subprocess.STDOUT)
        started.append(daemon)

        banner("train three runs with a t9k.em script (import runstore as em)")
        for lr in ("0.3", "0.03", "0.003"):
            sh(sys.executable, str(ROOT / "examples" / "train_t9k.py"), "--lr", lr, env=env)

        banner("the local store")
        sh(runstore, "ls", "-d", env=env)
        # three runs are named logreg: a run is named by its alternative name (or UUID)
        latest = json.loads(subprocess.run([runstore, "ls", "--json"], env=env, text=True,
                                           capture_output=True, check=True).stdout)[-1]
        sh(runstore, "describe", latest["alternative_name"], "-d", env=env)
        banner("which run had the best val accuracy with lr < 0.1? (plain SQL)")
        sh(runstore, "sql",
           "SELECT h.alternative_name, h.value AS lr, s.max_value AS best_val_accuracy "
           "FROM run_hparams h JOIN metric_summary s ON s.run_id = h.run_id "
           "WHERE h.key = 'lr' AND h.value < 0.1 AND s.type = 'val' AND s.key = 'accuracy' "
           "ORDER BY s.max_value DESC LIMIT 1", env=env)

        banner("wait until syncd has uploaded every run by itself")

        def all_synced() -> bool:
            out = subprocess.run([syncd, "status", "--json"], env=env, capture_output=True,
                                 text=True, check=False).stdout
            try:
                counts = json.loads(out)["counts"]
            except (ValueError, KeyError):
                return False
            return counts.get("synced", 0) == 3 and counts.get("running", 0) == 0

        t0 = time.monotonic()
        wait_for("syncd to upload the runs", all_synced, timeout_s=120)
        print(f"all runs synced {time.monotonic() - t0:.1f} s after the last one finished")
        sh(syncd, "status", env=env)

        banner("the same runs on the server")
        sh(runstore, "ls", "--remote", "default", env=env)
    finally:
        banner("stop everything the demo started")
        for proc in reversed(started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        print(f"done; logs and data are in {DEMO}")


if __name__ == "__main__":
    main()
