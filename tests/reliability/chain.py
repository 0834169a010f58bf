"""The whole chain for the model-based test: the real training process (agent.py), the real
store, the real `syncd run`, a real fault-injecting proxy and the real `runstore serve`.

``Chain`` owns the processes of one example; ``read_local`` / ``read_server`` read both
databases directly (read-only); ``check_invariants`` (after every step) and ``final_check``
(after healing) compare them against the model's record of what was created.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.server_harness import CLI, ServerProcess
from tests.syncd.helpers import Daemon, wait_for
from tests.syncd.proxy import ChaosProxy

AGENT = Path(__file__).with_name("agent.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
USER = "alice"

# Figures of every example run in this process (the soak prints them; RELIABILITY.md).
FIGURES: Counter = Counter()


@dataclass
class ModelRun:
    """What the model knows of a run it created."""

    uuid: str
    name: str
    alternative_name: str
    folder: str
    strategy: str
    role: str                     # 'origin' | 'conflict'
    bad_folder: bool = False      # a folder that does not exist and make_folder=False
    finished: bool = False        # finish() returned, or its process was killed
    killed: bool = False
    reopened: bool = False        # load_run() set it Running again after it ended
    auto_upload: bool = False     # syncd pushes its rows while it runs (live)
    manual: bool = False          # also uploaded by hand (`runstore upload`)
    artifacts: list[str] = field(default_factory=list)


class Agent:
    """The training process: python agent.py, one JSON command per line."""

    def __init__(self, home: Path, log_path: Path) -> None:
        env = {**os.environ, "RUNSTORE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT),
               "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen([sys.executable, str(AGENT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, env=env,
                                     cwd=str(home.parent))
        self._buf = b""
        self.pid = self._answer(60)["ready"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _answer(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(b"@@ "):
                    return json.loads(line[3:])
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the training process did not answer in {timeout_s}s")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise AssertionError(f"the training process died ({self.proc.wait()})")
                self._buf += data

    def call(self, timeout_s: float = 60.0, **cmd: Any) -> dict[str, Any]:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._answer(timeout_s)
        if "error" in answer:
            raise AssertionError(f"agent: {answer['error']}")
        return answer

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        self._log.close()


class Chain:
    """Server + proxy + daemon + training process of one example, in ``base`` (a new dir)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True)
        self.config_dir = base / "cfg"
        self.config_dir.mkdir()
        # Short client timeouts: a killed server must not hold a request for long.
        (self.config_dir / "config.toml").write_text("[server]\ntimeout_s = 5\n")
        self.server = ServerProcess(base / "srv")
        self.server.start()
        self.token = self.server.add_user(USER)
        self.proxy = ChaosProxy(self.server.port).start()
        self.daemon: Daemon | None = None
        self.uploads: list[subprocess.Popen] = []
        self.healing = False
        # Held while a kill is decided and done, and while healing starts: a process killed
        # from the proxy thread is dead (not merely signalled) before heal asks if it runs.
        self._kill_lock = threading.Lock()
        self.agent: Agent | None = None
        self.start_agent()
        self.start_daemon()

    # -- processes -------------------------------------------------------------------------
    def start_agent(self) -> None:
        self.agent = Agent(self.home, self.base / "agent.log")

    def start_server(self) -> None:
        """Start the server again. A 'SIGKILL the instant it answered' armed earlier may fire
        while it starts (it answers the daemon before our health check sees it up): that is
        one more kill, not a failure; the next step sees it down. Not while healing."""
        try:
            self.server.start()
        except RuntimeError:
            proc = self.server.proc
            if self.healing or proc is None or proc.poll() != -signal.SIGKILL:
                raise

    def start_daemon(self, url: str | None = None, wait_ready: bool = True) -> None:
        if self.daemon is not None:
            self.daemon.kill()  # reap a daemon killed from the proxy, close its files
        self.daemon = Daemon(self.home, self.config_dir, url or self.proxy.url, self.token,
                             self.base / "syncd.log", concurrency=2, max_backoff_s=1,
                             live_interval_s=1, fallback_interval_s=2)
        try:
            self.daemon.start(wait_ready=wait_ready)
        except AssertionError:
            # A fault armed in the proxy may SIGKILL it while it starts (its first pass runs
            # before READY): that is one more kill, not a failure; anything else is.
            if self.daemon.proc is None or self.daemon.proc.poll() != -signal.SIGKILL:
                raise

    def manual_upload(self, uuid: str, folder: str, strategy: str) -> None:
        """`runstore upload UUID -f FOLDER -m -c STRATEGY` through the proxy, in the
        background (it may race syncd for the same run)."""
        env = {**os.environ, "RUNSTORE_HOME": str(self.home), "PYTHONPATH": str(REPO_ROOT),
               "RUNSTORE_CONFIG_DIR": str(self.config_dir), "RUNSTORE_SERVER": self.proxy.url,
               "RUNSTORE_TOKEN": self.token}
        args = [*CLI, "upload", uuid, "-f", folder, "-c", strategy]
        if folder != "default":
            args.append("-m")
        with open(self.base / "manual-upload.log", "ab") as log:
            self.uploads.append(subprocess.Popen(args, stdout=log, stderr=log, env=env,
                                                 cwd=str(self.base)))

    def daemon_alive(self) -> bool:
        return self.daemon is not None and self.daemon.alive()

    def kill_daemon_now(self) -> None:
        """From the proxy thread: SIGKILL the daemon the instant the server answered."""
        with self._kill_lock:
            daemon = self.daemon
            if self.healing or daemon is None or daemon.proc is None:
                return
            if daemon.proc.poll() is None:
                os.kill(daemon.proc.pid, signal.SIGKILL)
                daemon.proc.wait(30)
                FIGURES["daemon_sigkills_after_commit"] += 1

    def kill_server_now(self) -> None:
        """From the proxy thread: SIGKILL the server the instant it answered (it committed).
        Only the signal: the main thread sees it gone (running() is False) and restarts it."""
        with self._kill_lock:
            proc = self.server.proc
            if not self.healing and proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                FIGURES["server_sigkills_after_commit"] += 1

    @staticmethod
    def lose_answer() -> None:
        """From the proxy thread: the server committed; its answer is dropped."""
        FIGURES["lost_responses"] += 1

    def close(self) -> None:
        for proc in self.uploads:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        if self.daemon is not None:
            self.daemon.kill()
        if self.agent is not None:
            self.agent.kill()
        self.proxy.stop()
        self.server.stop()

    # -- healing -----------------------------------------------------------------------------
    def heal_and_drain(self, model: dict[str, ModelRun], timeout_s: float) -> None:
        """Server up, every run ended, no more kills; wait until the daemon is idle.

        Faults still armed in the proxy (lost answers, 5xx: each a finite number of times)
        stay armed: the final sync goes through them.
        """
        with self._kill_lock:  # a kill the proxy thread is doing ends before we look
            self.healing = True
        if not self.server.running():
            self.server.start()
        if self.agent is not None and self.agent.alive():
            for run in model.values():
                if not run.finished:
                    self.agent.call(op="finish", uuid=run.uuid)
                    run.finished = True
        if not self.daemon_alive():
            self.start_daemon()
        for proc in self.uploads:  # uploads by hand end (with or without success)
            proc.wait(120)

        def idle() -> bool:
            local = read_local(self.home, with_rows=False)
            return all(r["status"] != "Running" and r["state"] in ("synced", "failed")
                       for r in local["runs"].values())

        try:
            wait_for(idle, timeout_s, "every finished run synced or failed after healing",
                     interval_s=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_states(self.home)}\n--- syncd log tail ---\n"
                                 f"{self.daemon.log()[-6000:]}") from None


def _states(home: Path) -> str:
    local = read_local(home, with_rows=False)
    return "\n".join(f"{u[:8]} {r['name']} {r['status']} {r['state']} {r['last_error']}"
                     for u, r in local["runs"].items())


# -- reading both sides ----------------------------------------------------------------------
def _ro(path: Path) -> sqlite3.Connection:
    """A read-only connection inside one read transaction: every query of one reading sees
    the same snapshot (WAL), never a row count from before a commit beside a metric_count
    from after it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    conn.execute("BEGIN")
    return conn


ROWS_SQL = "SELECT seq, type, key, step, epoch, value, timestamp FROM metrics WHERE run_id = ?"
# The run's stdout.log on the server (runstore/server/runfiles.py)
STDOUT_SQL = ("SELECT sha256, size_bytes FROM t9k_run_files WHERE run_id = ? AND "
              "path = 'stdout.log' AND sha256 IS NOT NULL")


def _wants(with_rows: bool | set[str], uuid: str) -> bool:
    return with_rows if isinstance(with_rows, bool) else uuid in with_rows


def read_local(home: Path, with_rows: bool | set[str] = True) -> dict[str, Any]:
    """Runs (with sync state, outputs, row count and, if asked, rows), artifacts and their
    objects of the local store."""
    conn = _ro(home / "runstore.db")
    try:
        runs: dict[str, dict[str, Any]] = {}
        for rid, uuid, name, alt, status, state, err, local_dir, *meta in conn.execute(
                "SELECT r.id, r.uuid, r.name, r.alternative_name, r.status, s.state, "
                "s.last_error, r.local_dir, r.description, r.labels, r.hparams FROM runs r "
                "LEFT JOIN sync_state s ON s.run_id = r.id"):
            n_rows = conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?",
                                  (rid,)).fetchone()[0]
            rows = (conn.execute(ROWS_SQL + " ORDER BY seq", (rid,)).fetchall()
                    if _wants(with_rows, uuid) else None)
            outputs = [u for (u,) in conn.execute(
                "SELECT ar.uuid FROM associations a JOIN artifacts ar ON ar.id = a.artifact_id "
                "WHERE a.run_id = ? ORDER BY a.direction, a.position", (rid,))]
            n_assoc = conn.execute("SELECT COUNT(*) FROM associations WHERE run_id = ?",
                                   (rid,)).fetchone()[0]
            # (sha256, size) of its stdout.log, None when missing or empty (nothing to send)
            stdout = _file_digest(Path(local_dir) / "stdout.log") \
                if _wants(with_rows, uuid) else None
            runs[uuid] = {"name": name, "alternative_name": alt, "status": status,
                          "state": state, "last_error": err, "rows": rows, "n_rows": n_rows,
                          "artifacts": outputs, "associations": n_assoc,
                          "meta": _meta(*meta), "stdout": stdout}
        artifacts: dict[str, list[tuple]] = {}
        for aid, uuid in conn.execute("SELECT id, uuid FROM artifacts"):
            artifacts[uuid] = conn.execute(
                "SELECT path, kind, sha256, size_bytes FROM artifact_objects "
                "WHERE artifact_id = ? ORDER BY path", (aid,)).fetchall()
    finally:
        conn.close()
    return {"runs": runs, "artifacts": artifacts}


def _meta(description: str, labels: str, hparams: str) -> tuple[str, list, dict]:
    """What a user may still edit after a run ended, comparable across the two databases."""
    return description, json.loads(labels), json.loads(hparams)


def read_server(data_dir: Path, with_rows: bool | set[str] = True,
                user: str = USER) -> dict[str, Any]:
    """The user's runs on the server (a list of copies per UUID, so duplicates show)."""
    conn = _ro(data_dir / "server.db")
    try:
        owner = conn.execute("SELECT id FROM users WHERE name = ?", (user,)).fetchone()[0]
        runs: dict[str, list[dict[str, Any]]] = {}
        for rid, uuid, node, folder, status, count, complete, *meta in conn.execute(
                "SELECT r.id, r.uuid, r.name, f.path, r.status, r.metric_count, r.complete, "
                "r.description, r.labels, r.hparams "
                "FROM runs r JOIN folders f ON f.id = r.folder_id WHERE r.owner_id = ?",
                (owner,)):
            n_rows = conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?",
                                  (rid,)).fetchone()[0]
            rows = (conn.execute(ROWS_SQL + " ORDER BY seq", (rid,)).fetchall()
                    if _wants(with_rows, uuid) else None)
            lineage = [u for (u,) in conn.execute(
                "SELECT a.uuid FROM lineage l JOIN artifacts a ON a.id = l.artifact_id "
                "WHERE l.run_id = ? ORDER BY l.direction, l.position", (rid,))]
            n_lineage = conn.execute("SELECT COUNT(*) FROM lineage WHERE run_id = ?",
                                     (rid,)).fetchone()[0]
            stdout = conn.execute(STDOUT_SQL, (rid,)).fetchone()
            runs.setdefault(uuid, []).append({
                "node": node, "folder": folder, "status": status, "metric_count": count,
                "complete": bool(complete), "rows": rows, "n_rows": n_rows, "artifacts": lineage,
                "lineage": n_lineage, "meta": _meta(*meta),
                "stdout": tuple(stdout) if stdout else None})
        artifacts: dict[str, list[list[tuple]]] = {}
        for aid, uuid in conn.execute("SELECT id, uuid FROM artifacts WHERE owner_id = ?",
                                      (owner,)):
            artifacts.setdefault(uuid, []).append(conn.execute(
                "SELECT path, kind, sha256, size_bytes FROM artifact_objects "
                "WHERE artifact_id = ? ORDER BY path", (aid,)).fetchall())
        nodes = Counter(conn.execute(
            "SELECT f.path, r.name FROM runs r JOIN folders f ON f.id = r.folder_id "
            "WHERE r.owner_id = ?", (owner,)).fetchall())
    finally:
        conn.close()
    return {"runs": runs, "artifacts": artifacts, "nodes": nodes}


def _sha_file(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()
    except FileNotFoundError:
        return None


def _stored_blob(data_dir: Path, server_blob: Any, sha: str) -> tuple[str | None, int]:
    """(sha256 of the bytes the server stores under sha, their size)."""
    if server_blob is not None:
        return server_blob(sha)
    blob = data_dir / "blobs" / sha[:2] / sha
    return _sha_file(blob), blob.stat().st_size if blob.exists() else 0


def _file_digest(path: Path) -> tuple[str, int] | None:
    sha = _sha_file(path)
    size = path.stat().st_size if sha is not None else 0
    return (sha, size) if sha is not None and size else None


def full_path(folder: str) -> str:
    return f"/{USER}/{folder}"


def _explained_absent(run: ModelRun, model: dict[str, ModelRun]) -> bool:
    """A run may be absent from the server by design: skipped, refused, or replaced."""
    if run.role == "conflict" and run.strategy in ("skip", "error"):
        return True
    if run.bad_folder:
        return True
    # Replaced: a later run of the same name and folder with strategy 'replace'.
    return any(o.role == "conflict" and o.strategy == "replace" and o.name == run.name
               and o.folder == run.folder and o.uuid != run.uuid for o in model.values())


# (data dir, uuid) -> the summary under which its server rows were last compared with the
# logged ones: rows are immutable below a count, so an unchanged summary needs no new reading.
_VERIFIED: dict[tuple[str, str], tuple] = {}


def _summary(copies: list[dict[str, Any]], mine: dict[str, Any] | None) -> tuple:
    return (tuple((c["metric_count"], c["n_rows"], c["complete"], c["status"], c["node"])
                  for c in copies), mine and (mine["n_rows"], mine["status"]))


def check_invariants(home: Path, data_dir: Path, model: dict[str, ModelRun]) -> dict[str, int]:
    """After any step: nothing twice on the server, nothing there that was not logged, and
    nothing marked synced that the server does not hold (or that is absent by design)."""
    key = str(data_dir)
    # The order of the reads matters while uploads go on. Sync states are read before the
    # server (a run marked synced stays complete there), rows after it (the store's rows only
    # grow, so every server row must already be in the store).
    before = read_local(home, with_rows=False)["runs"]
    server = read_server(data_dir, with_rows=False)
    local = read_local(home, with_rows=False)
    stale = {u for u, copies in server["runs"].items()
             if _VERIFIED.get((key, u)) != _summary(copies, local["runs"].get(u))}
    if stale:
        server = read_server(data_dir, with_rows=stale)
        local = read_local(home, with_rows=stale)
    lruns = local["runs"]
    problems: list[str] = []
    assert set(lruns) <= set(model), f"runs nobody created: {set(lruns) - set(model)}"
    for uuid, copies in server["runs"].items():
        if len(copies) != 1:
            problems.append(f"run {uuid} has {len(copies)} copies on the server")
        if uuid not in lruns:
            problems.append(f"run {uuid} on the server was never logged here")
            continue
        mine = lruns[uuid]
        for copy in copies:
            if copy["n_rows"] != copy["metric_count"]:
                problems.append(f"run {uuid}: {copy['n_rows']} server rows, metric_count "
                                f"{copy['metric_count']}")
            # A complete copy is all of the run; a re-opened run may have grown since.
            grown = model[uuid].reopened and copy["n_rows"] <= mine["n_rows"]
            if copy["complete"] and not grown and (copy["n_rows"] != mine["n_rows"]
                                                   or mine["status"] == "Running"
                                                   or copy["status"] != mine["status"]):
                problems.append(f"run {uuid}: complete on the server with {copy['n_rows']} "
                                f"rows ({copy['status']}), locally {mine['n_rows']} "
                                f"({mine['status']})")
            rows = copy["rows"]
            if rows is None or mine["rows"] is None:
                continue  # compared before, under the same summary
            if [r[0] for r in rows] != list(range(len(rows))):
                problems.append(f"run {uuid}: server rows are not seq 0..{len(rows) - 1}")
            if rows != mine["rows"][:len(rows)]:
                problems.append(f"run {uuid}: server rows differ from the logged rows")
    for (folder, node), n in server["nodes"].items():
        if n != 1:
            problems.append(f"{folder}/{node} names {n} runs")
    for uuid, copies in server["artifacts"].items():
        if len(copies) != 1:
            problems.append(f"artifact {uuid} has {len(copies)} copies on the server")
        if uuid not in local["artifacts"]:
            problems.append(f"artifact {uuid} on the server was never created here")
        elif any(c != local["artifacts"][uuid] for c in copies):
            problems.append(f"artifact {uuid}: objects differ from the local ones")
    # Promise 4: 'synced' only after the server acknowledged. (A run re-opened by load_run()
    # keeps its old 'synced' mark while it runs: that mark is about its ended state.)
    for uuid, r in before.items():
        if r["state"] != "synced" or r["status"] == "Running":
            continue
        copies = server["runs"].get(uuid, [])
        if copies and copies[0]["complete"] and copies[0]["n_rows"] == r["n_rows"]:
            continue
        if not copies and _explained_absent(model[uuid], model):
            continue
        problems.append(f"run {uuid} ({r['name']}) is marked synced, but the server holds "
                        f"{copies[0]['metric_count'] if copies else 'no'} rows of it "
                        f"(complete={copies[0]['complete'] if copies else None})")
    assert not problems, "\n".join(problems)
    for uuid in stale & set(server["runs"]):
        _VERIFIED[(key, uuid)] = _summary(server["runs"][uuid], lruns.get(uuid))
    return {"server_runs": len(server["runs"]),
            "synced": sum(r["state"] == "synced" for r in lruns.values())}


def classify_rows(server_rows: list[tuple], local_rows: list[tuple]) -> str | None:
    """None if the server holds exactly the logged rows; else 'lost' (a prefix is missing
    rows), 'duplicated' (all of them, then logged rows again) or 'unexpected' (rows that
    differ from the logged ones, or were never logged)."""
    if server_rows == local_rows:
        return None
    n = len(server_rows)
    if n < len(local_rows) and server_rows == local_rows[:n]:
        return "lost"
    logged = {r[1:] for r in local_rows}  # without seq
    if n > len(local_rows) and server_rows[:len(local_rows)] == local_rows and \
            all(r[1:] in logged for r in server_rows[len(local_rows):]):
        return "duplicated"
    return "unexpected"


def final_check(home: Path, data_dir: Path, model: dict[str, ModelRun], *,
                server: dict[str, Any] | None = None,
                server_blob: Any = None) -> dict[str, Any]:
    """After healing: the Jepsen-style set check. Returns the figures (lost, duplicated,
    unexpected must be empty; the assertion says which runs and why).

    server / server_blob (issue 13, the fleet test): the server's side read elsewhere (a
    read_server dict from PostgreSQL, see tests/fleet/server_view.py) and a function
    sha -> (sha256 of the stored bytes, size) for blobs not in data_dir."""
    server = read_server(data_dir) if server is None else server
    local = read_local(home)
    lruns, sruns = local["runs"], server["runs"]
    lost: list[str] = []
    duplicated: list[str] = []
    unexpected: list[str] = []
    wrong: list[str] = []
    rows_checked = blob_bytes = stdout_bytes = 0
    assert set(lruns) == set(model), "the store and the model disagree on which runs exist"
    duplicated += [u for u, c in sruns.items() if len(c) > 1]
    unexpected += [u for u in sruns if u not in lruns]
    groups: dict[tuple[str, str], list[ModelRun]] = {}
    for run in model.values():
        groups.setdefault((run.folder, run.name), []).append(run)
    for uuid, run in model.items():
        mine = lruns[uuid]
        copies = sruns.get(uuid, [])
        if mine["status"] == "Running" or mine["state"] not in ("synced", "failed"):
            wrong.append(f"{run.name} {uuid}: {mine['status']}/{mine['state']} after healing")
        must_be_absent = run.bad_folder or (run.role == "conflict"
                                            and run.strategy in ("skip", "error"))
        if must_be_absent:
            if copies:
                unexpected.append(uuid)
            want = "synced" if run.strategy == "skip" and not run.bad_folder else "failed"
            if mine["state"] != want:
                wrong.append(f"{run.name} {uuid} ({run.strategy}, bad_folder="
                             f"{run.bad_folder}): {mine['state']}, not {want}: "
                             f"{mine['last_error']}")
            if want == "failed" and not mine["last_error"]:
                wrong.append(f"{run.name} {uuid}: failed without a reason")
            continue
        if not copies:
            if not _explained_absent(run, model):
                lost.append(uuid)
            continue
        copy = copies[0]
        verdict = ("lost" if not copy["complete"]
                   else classify_rows(copy["rows"], mine["rows"]))
        if verdict is None and copy["status"] != mine["status"]:
            verdict = "unexpected"
        if verdict is not None:
            {"lost": lost, "duplicated": duplicated, "unexpected": unexpected}[verdict].append(
                uuid)
            continue
        if mine["state"] != "synced":
            wrong.append(f"{run.name} {uuid}: on the server but {mine['state']} locally")
        expected_node = (run.alternative_name if run.role == "conflict" and
                         run.strategy == "new" else run.name)
        if (copy["folder"], copy["node"]) != (full_path(run.folder), expected_node):
            wrong.append(f"{run.name} {uuid}: at {copy['folder']}/{copy['node']}, not "
                         f"{full_path(run.folder)}/{expected_node}")
        if copy["lineage"] != mine["associations"] or copy["artifacts"] != mine["artifacts"]:
            lost.append(f"{uuid} (lineage)")
        if copy["meta"] != mine["meta"]:
            lost.append(f"{uuid} (metadata: {copy['meta']} on the server, {mine['meta']} here)")
        rows_checked += len(copy["rows"])
        for art in mine["artifacts"]:
            objects = server["artifacts"].get(art)
            if not objects or objects[0] != local["artifacts"][art]:
                lost.append(f"{uuid} (artifact {art})")
                continue
            for _path, kind, sha, size in objects[0]:
                if kind != "file":
                    continue
                stored = _stored_blob(data_dir, server_blob, sha)
                if stored != (sha, size) or _sha_file(home / "blobs" / sha[:2] / sha) != sha:
                    lost.append(f"{uuid} (blob {sha})")
                blob_bytes += size
        # stdout.log: the node's file byte for byte (none if it printed nothing). A server
        # view without the key (an older reader) is not checked.
        if "stdout" in copy:
            if copy["stdout"] != mine["stdout"]:
                lost.append(f"{uuid} (stdout.log {copy['stdout']} on the server, "
                            f"{mine['stdout']} here)")
            elif copy["stdout"] is not None:
                sha, size = copy["stdout"]
                if _stored_blob(data_dir, server_blob, sha) != (sha, size):
                    lost.append(f"{uuid} (stdout.log blob {sha})")
                stdout_bytes += size
    # Each (folder, name) with a 'replace' among its runs: one holder, one of them.
    for (folder, name), members in groups.items():
        replacers = [m for m in members if m.role == "conflict" and m.strategy == "replace"]
        if not replacers:
            continue
        holders = [u for u, c in sruns.items()
                   if (c[0]["folder"], c[0]["node"]) == (full_path(folder), name)]
        allowed = {m.uuid for m in members if m.role == "origin" or m in replacers}
        if len(holders) != 1 or holders[0] not in allowed:
            wrong.append(f"{folder}/{name} is held by {holders}, expected one of {allowed}")
        elif any(lruns[m.uuid]["state"] == "synced" for m in replacers) and \
                model[holders[0]].role == "origin":
            wrong.append(f"{folder}/{name}: a replacing run was synced, yet the original "
                         "holds the name")
    figures = {"runs": len(model), "rows": rows_checked, "blob_bytes": blob_bytes,
               "stdout_bytes": stdout_bytes,
               "lost": len(lost), "duplicated": len(duplicated),
               "unexpected": len(unexpected), "wrong": len(wrong)}
    assert not (lost or duplicated or unexpected or wrong), (
        f"lost={lost}\nduplicated={duplicated}\nunexpected={unexpected}\n"
        + "\n".join(wrong))
    return figures
