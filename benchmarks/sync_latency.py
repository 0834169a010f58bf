"""syncd end to end: finish() -> visible-complete on the server latency, idle CPU, and RSS.

Runs a real `runstore serve` and a real `syncd run` (subprocesses) on a temporary store::

    .venv/bin/python benchmarks/sync_latency.py                 # full: 50 runs, 60 s idle, 1M
    .venv/bin/python benchmarks/sync_latency.py --quick         # 10 runs, 10 s idle, 200k

Targets (issue 4): p50 <= 1 s; idle CPU over 60 s < 1 %; RSS syncing a 1,000,000-point run
<= 100 MB and within 10 % of the RSS for a 100,000-point run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from tests.server_harness import ServerProcess  # noqa: E402


class DaemonProc:
    def __init__(self, home: Path, config: Path, url: str, token: str, log: Path) -> None:
        self.sock_path = str(home.parent / f"notify-{time.monotonic_ns()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        env = {**os.environ, "RUNSTORE_HOME": str(home), "RUNSTORE_CONFIG_DIR": str(config),
               "RUNSTORE_SERVER": url, "RUNSTORE_TOKEN": token, "NOTIFY_SOCKET": self.sock_path,
               "PYTHONPATH": str(REPO_ROOT), "RUNSTORE_SYNCD_LIVE_INTERVAL_S": "0"}
        self.log = open(log, "a")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "run"], env=env,
                                     stdout=self.log, stderr=self.log, cwd=REPO_ROOT)
        self.sock.settimeout(30)
        while b"READY=1" not in self.sock.recv(65536):
            pass
        self.ps = psutil.Process(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.sock.close()
        os.unlink(self.sock_path)
        self.log.close()


def run_script(code: str, home: Path) -> str:
    env = {**os.environ, "RUNSTORE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def latency(home: Path, url: str, token: str, n: int) -> list[float]:
    """Finish runs one by one in a training-like process; time until the server has them."""
    os.environ["RUNSTORE_HOME"] = str(home)
    import runstore as em

    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(n):
            run = em.create_run(name=f"lat{i}")
            for step in range(100):
                run.log("train", {"loss": 1 / (step + 1), "acc": step / 100}, step=step)
            start = time.perf_counter()
            run.finish()
            while True:
                r = http.get(f"/api/v1/runs/{run.uuid}")
                if r.status_code == 200 and r.json()["complete"]:
                    break
                time.sleep(0.005)
            out.append(time.perf_counter() - start)
    return out


def rss_while_syncing(tmp: Path, url: str, token: str, points: int, config: Path) -> float:
    """Peak RSS (MB) of a fresh daemon syncing one run of ``points`` metric rows."""
    home = tmp / f"rss-{points}"
    uuid = run_script(
        "import runstore as em\n"
        f"run = em.create_run(name='big{points}')\n"
        f"for s in range({points}):\n"
        "    run.log('train', {'loss': s * 1e-6}, step=s)\n"
        "run.finish()\nprint(run.uuid)\n", home)
    daemon = DaemonProc(home, config, url, token, tmp / f"syncd-rss-{points}.log")
    peak = 0
    done = threading.Event()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        def poll() -> None:
            while not done.is_set():
                r = http.get(f"/api/v1/runs/{uuid}")
                if r.status_code == 200 and r.json()["complete"]:
                    done.set()
                time.sleep(0.05)

        poller = threading.Thread(target=poll)
        poller.start()
        while not done.is_set():
            peak = max(peak, daemon.ps.memory_info().rss)
            time.sleep(0.01)
        poller.join()
    peak = max(peak, daemon.ps.memory_info().rss)
    daemon.stop()
    return peak / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--idle-seconds", type=float)
    ap.add_argument("--big", type=int, help="points of the large RSS run (default 1,000,000)")
    args = ap.parse_args()
    n = args.runs or (10 if args.quick else 50)
    idle_s = args.idle_seconds or (10.0 if args.quick else 60.0)
    big = args.big or (200_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="syncbench-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "config"
        config.mkdir()
        home = tmp / "home"
        with ServerProcess(tmp / "server") as server:
            token = server.add_user("bench")
            daemon = DaemonProc(home, config, server.url, token, tmp / "syncd.log")
            # Idle: the daemon has nothing to do; how much CPU does it burn?
            t0 = daemon.ps.cpu_times()
            wall0 = time.monotonic()
            time.sleep(idle_s)
            t1 = daemon.ps.cpu_times()
            idle_cpu = ((t1.user + t1.system) - (t0.user + t0.system)) / \
                (time.monotonic() - wall0) * 100
            lat = latency(home, server.url, token, n)
            daemon.stop()
            rss_small = rss_while_syncing(tmp, server.url, token, 100_000, config)
            rss_big = rss_while_syncing(tmp, server.url, token, big, config)
        lat.sort()
        p50 = statistics.median(lat)
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        print(f"runs finished one by one: {n}")
        print(f"finish() -> visible-complete on the server: p50 {p50 * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms  (target p50 <= 1000 ms: "
              f"{'OK' if p50 <= 1 else 'MISSED'})")
        print(f"idle daemon CPU over {idle_s:.0f} s: {idle_cpu:.3f} %  (target < 1 %: "
              f"{'OK' if idle_cpu < 1 else 'MISSED'})")
        ratio = rss_big / rss_small
        print(f"daemon peak RSS syncing 100,000 points: {rss_small:.1f} MB; {big:,} points: "
              f"{rss_big:.1f} MB; ratio {ratio:.3f}  (target <= 100 MB and ratio <= 1.10: "
              f"{'OK' if rss_big <= 100 and ratio <= 1.10 else 'MISSED'})")


if __name__ == "__main__":
    main()
