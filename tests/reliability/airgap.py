"""Promise 9 for bundles: an air-gapped node whose only link is bundles carried by hand.

A hypothesis state machine: a real training process (agent.py) logs on the node; `export`
steps write bundles (runstore.bundle, as `runstore export` and syncd's drop mode do) into an
outbox; a courier delivers them to the gateway in any order, twice, cut short (a file
truncated, or COMMIT not copied yet: refused, counted as not delivered) or never until the
end; imports are SIGKILLed at random moments (`runstore import` in a subprocess) and the
server is killed between them. The gateway imports with runstore.bundle.import_bundles into
its staging store and uploads to a real `runstore serve`.

Invariants after every step: chain.check_invariants between the NODE's store and the server
(no run twice, no row that the node did not log, nothing complete that is not all of it).
Final (every bundle delivered intact at least once): chain.final_check between the gateway's
staging store and the server, and the staging store holds exactly the node's rows:
lost = duplicated = unexpected = 0.

Sizes: RUNSTORE_AIRGAP_EXAMPLES (default 2) examples of RUNSTORE_AIRGAP_STEPS (default 20).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from runstore.bundle import export_bundle, import_bundles, staging_store
from runstore.remote import Client
from runstore.store import Store, reap_dead_runs
from tests.reliability.chain import (
    FIGURES,
    REPO_ROOT,
    USER,
    Agent,
    ModelRun,
    check_invariants,
    classify_rows,
    final_check,
    read_local,
)
from tests.server_harness import CLI, ServerProcess

_counter = itertools.count()


class AirGapMachine(RuleBasedStateMachine):
    """One example = one node store + training process, one gateway, one fresh server."""

    base_dir: Path = Path("/tmp")

    def __init__(self) -> None:
        super().__init__()
        self.dir = self.base_dir / f"airgap{next(_counter)}-{os.getpid()}"
        self.node = self.dir / "node"
        self.node.mkdir(parents=True)
        self.outbox = self.dir / "outbox"
        self.inbox = self.dir / "inbox"
        self.inbox.mkdir()
        self.server = ServerProcess(self.dir / "srv")
        self.server.start()
        self.token = self.server.add_user(USER)
        self.client = Client(self.server.url, self.token, timeout_s=5, max_attempts=2,
                             max_backoff_s=0.05)
        self.store = Store(self.node)
        self.gateway = self.dir / "gateway"
        self.staging = staging_store(self.gateway)
        self.agent = Agent(self.node, self.dir / "agent.log")
        self.model: dict[str, ModelRun] = {}
        self.open: list[str] = []
        self.bundles: list[Path] = []
        self.delivered: set[Path] = set()
        self.names = itertools.count()
        FIGURES["airgap_examples"] += 1

    # -- the node ----------------------------------------------------------------------------
    @initialize(rows=st.integers(1, 300))
    def first_run(self, rows: int) -> None:
        self.start_run("default", rows)

    @precondition(lambda self: len(self.open) < 3 and len(self.model) < 10)
    @rule(folder=st.sampled_from(["default", "proj"]), rows=st.integers(0, 300))
    def start_run(self, folder: str, rows: int) -> None:
        name = f"g{next(self.names)}"
        answer = self.agent.call(op="create", name=name, folder=folder,
                                 make_folder=folder != "default", strategy="new")
        uuid = answer["uuid"]
        self.model[uuid] = ModelRun(uuid, name, answer["alternative_name"], folder, "new",
                                    "origin")
        self.open.append(uuid)
        if rows:
            self.agent.call(op="log", uuid=uuid, n=rows)
            self.agent.call(op="flush", uuid=uuid)

    @precondition(lambda self: self.open)
    @rule(data=st.data(), n=st.integers(1, 3000), then_export=st.booleans())
    def log_rows(self, data, n: int, then_export: bool) -> None:
        uuid = data.draw(st.sampled_from(self.open))
        self.agent.call(op="log", uuid=uuid, n=n)
        self.agent.call(op="flush", uuid=uuid)
        if then_export:  # a bundle of a live run (syncd --to-dir's schedule)
            self.export()

    @precondition(lambda self: self.open)
    @rule(data=st.data(), size=st.sampled_from([1, 70_000, 600_000]))
    def add_artifact(self, data, size: int) -> None:
        uuid = data.draw(st.sampled_from(self.open))
        seed = next(_counter)
        answer = self.agent.call(op="artifact", uuid=uuid, size=size, seed=seed,
                                 name=f"model{seed % 2}")
        self.model[uuid].artifacts.append(answer["artifact_uuid"])

    @precondition(lambda self: self.open)
    @rule(data=st.data(), then_export=st.booleans())
    def finish_run(self, data, then_export: bool) -> None:
        uuid = data.draw(st.sampled_from(self.open))
        self.agent.call(op="finish", uuid=uuid)
        self.open.remove(uuid)
        self.model[uuid].finished = True
        if then_export:  # syncd --to-dir writes a bundle when a run ends
            self.export()

    @precondition(lambda self: self.open)
    @rule()
    def sigkill_training_process(self) -> None:
        self.agent.kill()
        for uuid in self.open:
            self.model[uuid].finished = self.model[uuid].killed = True
        self.open = []
        FIGURES["airgap_training_sigkills"] += 1
        self.agent = Agent(self.node, self.dir / "agent.log")

    @rule()
    def export(self) -> None:
        """What syncd --to-dir does on a pass: reap crashed runs, write what changed."""
        reap_dead_runs(self.store)
        made = export_bundle(self.store, self.outbox)
        if made is not None:
            self.bundles.append(made.path)
            FIGURES["airgap_bundles"] += 1

    # -- the courier and the gateway ------------------------------------------------------------
    def _copy(self, bundle: Path) -> Path:
        target = self.inbox / f"{bundle.name}.{next(_counter)}"
        shutil.copytree(bundle, target)
        return target

    def _import(self, copy: Path) -> None:
        report = import_bundles([copy], store=self.staging, client=self.client)
        assert report.bundles[0].error is None, report.bundles[0].error

    @precondition(lambda self: self.bundles)
    @rule(data=st.data(), how=st.sampled_from(["intact", "intact", "twice", "truncated",
                                               "uncommitted", "then-server-sigkill"]))
    def deliver(self, data, how: str) -> None:
        """Any bundle, in any order: intact, twice, or cut short (refused, not delivered);
        or intact, and then the gateway's server dies (the next delivery restarts it: the
        uploads that met it dead go again then)."""
        if not self.server.running():
            self.server.start()
        bundle = data.draw(st.sampled_from(self.bundles))
        copy = self._copy(bundle)
        if how in ("truncated", "uncommitted"):
            if how == "uncommitted":
                (copy / "COMMIT").unlink()
            else:
                files = sorted(p for p in copy.rglob("*") if p.is_file() and p.stat().st_size)
                victim = data.draw(st.sampled_from(files))
                with victim.open("r+b") as fh:
                    fh.truncate(victim.stat().st_size // 2)
            before = self.staging.read("SELECT COUNT(*) FROM bundle_imports")[0][0]
            report = import_bundles([copy], store=self.staging, client=self.client)
            assert report.bundles[0].error, f"a damaged bundle was accepted: {copy}"
            assert self.staging.read("SELECT COUNT(*) FROM bundle_imports")[0][0] == before
            FIGURES["airgap_refused"] += 1
            return
        for _ in range(2 if how == "twice" else 1):
            self._import(copy)
            FIGURES["airgap_deliveries"] += 1
        self.delivered.add(bundle)
        if how == "then-server-sigkill":
            self.server.kill()
            FIGURES["airgap_server_sigkills"] += 1

    @precondition(lambda self: self.bundles)
    @rule(data=st.data(), delay=st.floats(0.2, 2.5))
    def sigkill_import(self, data, delay: float) -> None:
        """`runstore import` SIGKILLed at a random moment (merge, blob copy, upload)."""
        if not self.server.running():
            self.server.start()
        copy = self._copy(data.draw(st.sampled_from(self.bundles)))
        env = {**os.environ, "RUNSTORE_HOME": str(self.gateway), "PYTHONPATH": str(REPO_ROOT),
               "RUNSTORE_SERVER": self.server.url, "RUNSTORE_TOKEN": self.token,
               "RUNSTORE_CONFIG_DIR": str(self.dir / "cfg")}
        proc = subprocess.Popen([*CLI, "import", str(copy)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            FIGURES["airgap_import_sigkills"] += 1
        proc.wait(60)

    @invariant()
    def nothing_twice_nothing_unlogged(self) -> None:
        if (self.server.data_dir / "server.db").exists():
            check_invariants(self.node, self.server.data_dir, self.model)

    # -- the end -------------------------------------------------------------------------------
    def heal_and_check(self) -> dict[str, int]:
        """Every run ended, a last bundle, every bundle delivered intact once (any order)."""
        if not self.server.running():
            self.server.start()
        if self.agent.alive():
            for uuid in self.open:
                self.agent.call(op="finish", uuid=uuid)
                self.model[uuid].finished = True
            self.open = []
        self.export()
        late = [b for b in self.bundles if b not in self.delivered]
        random.Random(len(self.bundles)).shuffle(late)
        for bundle in late:
            self._import(self._copy(bundle))
        for _ in range(3):  # uploads that met a dead server go again (as the next import would)
            local = read_local(self.staging.home, with_rows=False)["runs"]
            if all(r["state"] == "synced" for r in local.values()):
                break
            self._import(self._copy(self.bundles[-1]))
        figures = final_check(self.staging.home, self.server.data_dir, self.model)
        node = read_local(self.node)["runs"]
        staged = read_local(self.staging.home)["runs"]
        verdicts = {u: classify_rows(staged[u]["rows"], node[u]["rows"]) for u in node}
        bad = {u: v for u, v in verdicts.items() if v is not None}
        assert not bad, f"the gateway's rows differ from the node's: {bad}"
        assert {u: r["status"] for u, r in node.items()} == \
            {u: r["status"] for u, r in staged.items()}
        return figures

    def teardown(self) -> None:
        ok = False
        try:
            figures = self.heal_and_check()
            for key, value in figures.items():
                FIGURES[f"airgap_checked_{key}"] += value
            ok = True
        finally:
            self.agent.kill()
            self.client.close()
            self.server.stop()
            self.store.close()
            self.staging.close()
            if ok:
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                print(f"kept the failing air-gap example's files in {self.dir}")
