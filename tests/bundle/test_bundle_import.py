"""Bundles end to end: `runstore export` on one store, `runstore import` to a real server.

Exactly once is checked on the server itself: each run's UUID appears once in the folder and
holds exactly the source's rows, however often, in whatever order, and by how many processes
at once the bundles were imported, and wherever an import was killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runstore.bundle import export_bundle, staging_store
from runstore.remote import Client
from tests.bundle.helpers import assert_server_holds, cli, server_runs, source_with_runs
from tests.remote.rs_fixtures import add_metrics, finish, local_rows
from tests.server_harness import CLI, _env


@pytest.fixture
def client(server, alice):
    with Client(server.url, alice, max_backoff_s=0.05) as c:
        yield c


def test_export_then_import_uploads_each_run_once(tmp_path: Path, server, alice, client):
    source, uuids = source_with_runs(tmp_path / "node", tmp_path)
    out = cli("export", str(tmp_path / "usb"), "--json", home=tmp_path / "node")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["sequence"] == 1 and made["metric_rows"] == 3070 and made["blobs"] == 2
    bundle = Path(made["bundle"])
    assert sorted(p.name for p in bundle.iterdir()) == ["COMMIT", "blobs", "manifest.json",
                                                         "records.sqlite"]

    first = cli("import", str(bundle), home=tmp_path / "gateway", server=server, token=alice)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"bundle 1 of store {made['source_store'][:12]}: 3 run(s) merged"
    assert sum(x.startswith("Run created: /alice/default/") for x in lines) == 3
    assert any("(not final: the run was still running)" in x for x in lines)  # run c
    assert_server_holds(client, source, uuids)
    artifact = client.request("GET", "/folders/alice/default")["nodes"]
    assert any(n["kind"] == "Artifact" for n in artifact)

    again = cli("import", str(bundle), home=tmp_path / "gateway", server=server, token=alice)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].endswith("3 run(s) already imported")
    assert_server_holds(client, source, uuids)


def test_nothing_new_writes_no_bundle(tmp_path: Path):
    source_with_runs(tmp_path / "node", tmp_path)
    assert cli("export", str(tmp_path / "usb"), home=tmp_path / "node").returncode == 0
    again = cli("export", str(tmp_path / "usb"), home=tmp_path / "node")
    assert (again.returncode, again.stdout) == (
        0, "nothing new since the last export; no bundle written\n")
    assert len(list((tmp_path / "usb").iterdir())) == 1


def test_incremental_bundles_out_of_order_and_overlapping(tmp_path: Path, server, alice,
                                                         client):
    """A live run in three bundles, imported 3, 1, 1+2 again, then an --all bundle."""
    source, (a, b, c) = source_with_runs(tmp_path / "node", tmp_path)
    usb = tmp_path / "usb"
    one = export_bundle(source, usb)
    add_metrics(source, c, 500)
    two = export_bundle(source, usb)
    add_metrics(source, c, 30)
    finish(source, c)
    three = export_bundle(source, usb)
    assert one and two and three
    assert [(r.rows_from, r.rows_to) for r in two.runs] == [(20, 520)]
    assert [(r.rows_from, r.rows_to, r.status) for r in three.runs] == [(520, 550, "Complete")]

    gw = tmp_path / "gateway"
    out = cli("import", str(three.path), home=gw, server=server, token=alice)
    assert out.returncode == 0, out.stderr
    assert any(x.startswith("Run held: c_") and "waits for metric rows from 0 on" in x
               for x in out.stdout.splitlines())
    assert "gap: bundles 1-2 from store" in out.stdout and "never arrived" in out.stdout
    assert server_runs(client) == []

    out = cli("import", str(one.path), home=gw, server=server, token=alice)
    assert out.returncode == 0, out.stderr
    assert "waits for metric rows from 20 on" in out.stdout and "gap: bundle 2 from" in out.stdout
    assert sorted(server_runs(client)) == sorted([a, b])

    out = cli("import", str(usb), home=gw, server=server, token=alice)  # the whole drop dir
    assert out.returncode == 0, out.stderr
    assert "gap:" not in out.stdout
    assert_server_holds(client, source, [a, b, c])
    assert client.request("GET", f"/runs/{c}")["complete"]

    full = export_bundle(source, usb, mode="all")
    assert full and cli("import", str(full.path), home=gw, server=server,
                        token=alice).returncode == 0
    assert_server_holds(client, source, [a, b, c])


def test_into_store_merges_for_sql_without_a_server(tmp_path: Path):
    source, uuids = source_with_runs(tmp_path / "node", tmp_path)
    bundle = export_bundle(source, tmp_path / "usb")
    assert bundle
    out = cli("import", str(bundle.path), "--into-store", home=tmp_path / "laptop")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Run merged: ") == 3
    sql = cli("sql", "SELECT COUNT(*) AS n FROM metrics", "--json", home=tmp_path / "laptop")
    assert json.loads(sql.stdout) == [{"n": 3070}]
    from runstore.store import Store

    laptop = Store(tmp_path / "laptop")
    for uuid in uuids:
        assert local_rows(laptop, uuid) == local_rows(source, uuid)
    assert laptop.read("SELECT COUNT(*) FROM blobs")[0][0] == 2


def test_two_processes_import_one_bundle_at_once(tmp_path: Path, server, alice, client):
    source, uuids = source_with_runs(tmp_path / "node", tmp_path)
    bundle = export_bundle(source, tmp_path / "usb")
    assert bundle
    env = _env({"RUNSTORE_HOME": str(tmp_path / "gateway"), "RUNSTORE_SERVER": server.url,
                "RUNSTORE_TOKEN": alice})
    procs = [subprocess.Popen([*CLI, "import", str(bundle.path), "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    reports = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        reports.append(json.loads(stdout))
    assert sorted(r["bundles"][0]["merged"] for r in reports) == [False, True]
    assert_server_holds(client, source, uuids)


KILLS = int(os.environ.get("RUNSTORE_TEST_IMPORT_KILLS", "3" if os.environ.get("CI") else "6"))


def test_import_killed_at_random_points_then_rerun_is_exactly_once(tmp_path: Path, server,
                                                                    alice, client):
    """SIGKILL `runstore import` at random moments (merge, blob copy, upload), re-run each time."""
    source, uuids = source_with_runs(tmp_path / "node", tmp_path)
    from tests.remote.rs_fixtures import make_run

    uuids.append(make_run(source, "big", n_metrics=120_000))
    bundle = export_bundle(source, tmp_path / "usb")
    assert bundle
    env = _env({"RUNSTORE_HOME": str(tmp_path / "gateway"), "RUNSTORE_SERVER": server.url,
                "RUNSTORE_TOKEN": alice})
    rng = random.Random(int(os.environ.get("RUNSTORE_TEST_SEED", "10")))
    for _ in range(KILLS):
        proc = subprocess.Popen([*CLI, "import", str(bundle.path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 2.5))  # startup, verify, merge, upload
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    final = subprocess.run([*CLI, "import", str(bundle.path)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert_server_holds(client, source, uuids)
    staging = staging_store(tmp_path / "gateway")
    assert staging.read("PRAGMA integrity_check")[0][0] == "ok"
    assert staging.read("SELECT COUNT(*) FROM bundle_imports")[0][0] == 1


def test_export_named_runs_whole_and_bad_arguments(tmp_path: Path):
    source, (a, b, c) = source_with_runs(tmp_path / "node", tmp_path)
    alt = source.read("SELECT alternative_name FROM runs WHERE uuid = ?", (b,))[0][0]
    assert export_bundle(source, tmp_path / "usb")  # everything went out once already
    out = cli("export", str(tmp_path / "usb"), alt, "--json", home=tmp_path / "node")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert [(r["uuid"], r["rows_from"], r["rows_to"]) for r in made["runs"]] == [(b, 0, 50)]
    both = cli("export", str(tmp_path / "usb"), "--all", alt, home=tmp_path / "node")
    assert both.returncode == 2 and "give RUN names or --all, not both" in both.stderr
    missing = cli("export", str(tmp_path / "usb"), "nosuchrun", home=tmp_path / "node")
    assert (missing.returncode, missing.stderr) == (
        1, f"Error: no run 'nosuchrun' in the store {str(tmp_path / 'node')!r} (not a UUID, "
        "alternative name, directory or name there). Try: runstore ls\n")


def test_a_run_the_server_refuses_fails_alone_and_once(tmp_path: Path, server, alice, client):
    """conflict_strategy='error' and the name is taken: that run fails with the server's
    reason, the others go up; the next import does not try it again until it changes."""
    from runstore.store import Store
    from tests.remote.rs_fixtures import make_run

    source = Store(tmp_path / "node")
    taken = make_run(Store(tmp_path / "other"), "taken", n_metrics=5)
    from runstore.remote import upload_run

    upload_run(Store(tmp_path / "other"), taken, client)
    refused = make_run(source, "taken", n_metrics=5, strategy="error")
    fine = make_run(source, "fine", n_metrics=5)
    bundle = export_bundle(source, tmp_path / "usb")
    assert bundle
    first = cli("import", str(bundle.path), home=tmp_path / "gateway", server=server,
                token=alice)
    assert first.returncode == 1
    assert any(x.startswith("Run created: /alice/default/fine") for x in
               first.stdout.splitlines())
    [line] = first.stderr.splitlines()
    assert line.startswith("Run failed: taken_") and "taken" in line
    again = cli("import", str(bundle.path), home=tmp_path / "gateway", server=server,
                token=alice)
    assert (again.returncode, again.stderr) == (0, "")
    assert refused not in server_runs(client) and fine in server_runs(client)
