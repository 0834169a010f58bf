"""The fleet: stateless server replicas on one PostgreSQL and one S3 bucket (issue 13).

A real PostgreSQL (tests/pg_harness.py) and a real SeaweedFS (tests/s3_harness.py), three
`runstore serve --database ... --blobs s3://...` replicas behind a round-robin TCP proxy
(tests/fleet/rr_proxy.py), and N uploaders, each a store of its own on this machine uploading
with the real client code (runstore.remote.upload_run: claim, artifact blobs and claims,
metric chunks, lineage, finalize) while it keeps logging new runs. Meanwhile, each step taken
only once more runs have synced since the previous one (so every step lands mid-upload): a
replica restarted, a replica SIGKILLed (left down a while, then started), PostgreSQL
restarted (`pg_ctl stop -m immediate`), another replica restarted, the killed one SIGKILLed
again. Every artifact holds a file identical across all uploaders (so replicas race
create-only writes of one blob) and one run holds a 10 MB file (the staged multipart path).

Then the chain oracle (tests/reliability/chain.py final_check, its set logic unchanged, the
server side read from PostgreSQL and the bucket by tests/fleet/server_view.py) per store:
lost = duplicated = unexpected = 0, every blob in the bucket hashing to its name; and across
stores: the server holds exactly the union of the stores' runs, each once.

Size: FLEET_UPLOADERS (default 50; 6 under CI=true), FLEET_MIN_RUNS runs per uploader at
least (default 3; 2 under CI), FLEET_ROWS rows per run (default 3000; 800 under CI).
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest

from runstore.errors import RemoteError, TransientRemoteError
from runstore.remote import Client, upload_run
from runstore.store import Store
from tests.fleet.rr_proxy import RoundRobinProxy
from tests.fleet.server_view import bucket_blob, read_server_pg
from tests.pg_harness import PostgresProcess
from tests.reliability.chain import USER, ModelRun, final_check
from tests.remote.rs_fixtures import link, make_artifact, make_run
from tests.s3_harness import SeaweedProcess
from tests.server_harness import ServerProcess

CI = os.environ.get("CI") == "true"
UPLOADERS = int(os.environ.get("FLEET_UPLOADERS", "6" if CI else "50"))
MIN_RUNS = int(os.environ.get("FLEET_MIN_RUNS", "2" if CI else "3"))
ROWS = int(os.environ.get("FLEET_ROWS", "800" if CI else "3000"))
PREFIX = "fleet"
SHARED_FILE = b"the same bytes in every store\n" * 1000
BIG_FILE_BYTES = 10 * 1024 * 1024


class Uploader(threading.Thread):
    """One node: a store of its own; logs a run, uploads it until synced, logs the next."""

    def __init__(self, index: int, base: Path, url: str, token: str,
                 stop: threading.Event, progress: list[int], lock: threading.Lock) -> None:
        super().__init__(name=f"uploader-{index}", daemon=True)
        self.index, self.url, self.token = index, url, token
        self.home = base / f"node{index}"
        self.tmp = base / f"node{index}-src"
        self.tmp.mkdir(parents=True)
        self.folder = f"fleet/u{index}"
        self.model: dict[str, ModelRun] = {}
        self.stop, self.progress, self.lock = stop, progress, lock
        self.errors: list[str] = []
        self.retries = 0

    def _backoff(self, seconds: float) -> None:
        """The client's sleep before it retries a failed request (counted)."""
        self.retries += 1
        time.sleep(seconds)

    def _log_run(self, store: Store, k: int) -> str:
        files = {"shared.txt": SHARED_FILE, "own.bin": secrets.token_bytes(2048)}
        if self.index == 0 and k == 0:
            files["big.bin"] = secrets.token_bytes(BIG_FILE_BYTES)
        art = make_artifact(store, self.tmp, f"model{k}", files=files)
        run = make_run(store, f"r{k}", n_metrics=ROWS + k, folder=self.folder,
                       make_folder=True, strategy="new")
        link(store, run, art, "output")
        alt = store.read("SELECT alternative_name FROM runs WHERE uuid = ?", (run,))[0][0]
        self.model[run] = ModelRun(uuid=run, name=f"r{k}", alternative_name=alt,
                                   folder=self.folder, strategy="new", role="origin",
                                   finished=True, artifacts=[art])
        return run

    def run(self) -> None:
        store = Store(self.home)
        deadline = time.monotonic() + 600
        try:
            k = 0
            while k < MIN_RUNS or not self.stop.is_set():
                run = self._log_run(store, k)
                k += 1
                while True:
                    try:
                        with Client(self.url, self.token, timeout_s=10, max_attempts=6,
                                    max_backoff_s=1.0, sleep=self._backoff) as client:
                            if upload_run(store, run, client).complete:
                                break
                        self.errors.append(f"{run}: upload not complete")
                        return
                    except TransientRemoteError:
                        self.retries += 1  # replicas or the database down: again
                    except RemoteError as exc:
                        self.errors.append(f"{run}: {exc}")
                        return
                    if time.monotonic() > deadline:
                        self.errors.append(f"{run}: not synced after 600 s")
                        return
                    time.sleep(0.2)
                with self.lock:
                    self.progress[0] += 1
        except Exception as exc:  # reported by the test, never swallowed
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            store.close()


@pytest.mark.timeout(900)
def test_fleet_three_replicas_one_postgres_one_bucket(tmp_path: Path):
    # PostgreSQL is crashed (pg_ctl stop -m immediate) mid-run: an acknowledged commit must
    # survive that, as in production (the harness defaults to synchronous_commit=off).
    pg = PostgresProcess(tmp_path / "pg", settings={"synchronous_commit": "on"}).start()
    s3 = SeaweedProcess(tmp_path / "s3").start()
    replicas: list[ServerProcess] = []
    uploaders: list[Uploader] = []
    proxy = None
    try:
        url = pg.create_database("fleet")
        env = {**s3.env, "RUNSTORE_BLOBS": s3.blobs_url(PREFIX)}
        replicas = [ServerProcess(tmp_path / f"replica{i}", database_url=url, extra_env=env)
                    for i in range(3)]
        for r in replicas:
            r.start()
        token = replicas[0].add_user(USER)
        proxy = RoundRobinProxy([r.port for r in replicas]).start()
        stop, lock, progress = threading.Event(), threading.Lock(), [0]
        uploaders = [Uploader(i, tmp_path, proxy.url, token, stop, progress, lock)
                     for i in range(UPLOADERS)]
        for u in uploaders:
            u.start()

        events: list[tuple[str, int]] = []
        gap = max(2, UPLOADERS // 3)

        def after_progress(what: str) -> None:
            """Wait until `gap` more runs synced, then record the step as mid-run."""
            target = progress[0] + gap
            limit = time.monotonic() + 300
            while progress[0] < target and time.monotonic() < limit:
                if all(not u.is_alive() for u in uploaders):
                    break
                time.sleep(0.05)
            events.append((what, progress[0]))

        after_progress("replica 0 restarted")
        replicas[0].restart()
        after_progress("replica 1 SIGKILLed")
        os.kill(replicas[1].pid, signal.SIGKILL)
        replicas[1].proc.wait(10)
        after_progress("replica 1 started again")
        replicas[1].start()
        after_progress("PostgreSQL restarted")
        retries = sum(u.retries for u in uploaders)
        pg.stop()
        # down until an uploader has met the outage (a retried request), 10 s at most
        limit = time.monotonic() + 10
        while sum(u.retries for u in uploaders) == retries and time.monotonic() < limit:
            time.sleep(0.05)
        pg.start()
        after_progress("replica 2 restarted")
        replicas[2].restart()
        after_progress("replica 1 SIGKILLed again")
        os.kill(replicas[1].pid, signal.SIGKILL)
        replicas[1].proc.wait(10)
        replicas[1].start()
        stop.set()
        for u in uploaders:
            u.join(660)

        errors = [f"uploader {u.index}: {e}" for u in uploaders for e in u.errors]
        assert not errors, "\n".join(errors[:20])
        assert all(done < sum(len(u.model) for u in uploaders) for _, done in events), events
        assert sum(proxy.connections[i] > 0 for i in range(3)) == 3, proxy.connections

        # The oracle: per store, its runs on the server, lost = duplicated = 0.
        store_client = s3._store()
        blob_of = bucket_blob(store_client, PREFIX)
        totals = {"runs": 0, "rows": 0, "blob_bytes": 0}
        every: set[str] = set()
        for u in uploaders:
            server = read_server_pg(url, only=set(u.model))
            figures = final_check(u.home, tmp_path / "unused", u.model, server=server,
                                  server_blob=blob_of)
            assert figures["lost"] == figures["duplicated"] == 0, figures
            for key in totals:
                totals[key] += figures[key]
            every |= set(u.model)
        everything = read_server_pg(url, with_rows=False)
        assert set(everything["runs"]) == every, "runs on the server no store logged"
        assert all(len(c) == 1 for c in everything["runs"].values())
        staged = s3.list_keys(f"{PREFIX}/uploads/")
        assert staged == [], f"staged upload parts left behind: {staged[:5]}"
        print(f"fleet: {UPLOADERS} uploaders, {totals['runs']} runs, {totals['rows']} rows, "
              f"{totals['blob_bytes']} blob bytes, {sum(u.retries for u in uploaders)} "
              f"upload retries, proxy connections {dict(proxy.connections)}, steps {events}")
    finally:
        if uploaders:
            uploaders[0].stop.set()  # daemon threads; they end once they see it
        if proxy is not None:
            proxy.stop()
        for r in replicas:
            r.stop()
        s3.stop()
        pg.cleanup()
