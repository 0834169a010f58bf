"""The one run resolver (runstore.rows.resolve_run) and its callers: load_run, `runstore
describe`, `runstore upload` and `syncd retry` all take a reference by the same rule:
UUID > alternative name > directory > a unique name > a unique UUID prefix; a name several runs
share is an error listing them, with a Try: naming the alternative name."""

from __future__ import annotations

import os
import subprocess

import pytest

import runstore as em
from runstore.errors import AmbiguousError, NotFoundError
from runstore.rows import resolve_run
from runstore.store import Store
from tests.factories import node_env, syncd_cli
from tests.server_harness import run_cli


def _two_cnn_and_one_mlp() -> tuple[em.Run, em.Run, em.Run]:
    runs = []
    for name in ("cnn", "cnn", "mlp"):
        run = em.create_run(name=name)
        run.finish()
        runs.append(run)
    return runs[0], runs[1], runs[2]


def test_the_rule(store: Store, tmp_path) -> None:
    first, second, mlp = _two_cnn_and_one_mlp()
    assert resolve_run(store, first.uuid)["id"] == first.id
    assert resolve_run(store, second.alternative_name)["id"] == second.id
    assert resolve_run(store, mlp.local)["id"] == mlp.id
    assert resolve_run(store, "mlp")["id"] == mlp.id
    assert resolve_run(store, mlp.uuid[:8])["id"] == mlp.id
    with pytest.raises(AmbiguousError) as info:
        resolve_run(store, "cnn")
    message = str(info.value)
    assert "2 runs are named 'cnn'" in message
    assert first.alternative_name in message and second.alternative_name in message
    assert f"Try: the alternative name, e.g. {second.alternative_name!r}" in message
    with pytest.raises(NotFoundError, match="no run 'nope'.*Try: runstore ls"):
        resolve_run(store, "nope")
    # An alternative name that is another run's name: the alternative name wins (rule order).
    odd = em.create_run(name=first.alternative_name[:40].rstrip("_"))
    odd.finish()
    assert resolve_run(store, first.alternative_name)["id"] == first.id


def test_load_run_uses_the_rule(store: Store) -> None:
    first, second, mlp = _two_cnn_and_one_mlp()
    with pytest.raises(AmbiguousError, match="2 runs are named 'cnn'"):
        em.load_run("cnn")
    assert em.load_run("mlp").uuid == mlp.uuid
    assert em.load_run(first.alternative_name).uuid == first.uuid


def _env(home) -> dict[str, str]:
    return {"RUNSTORE_HOME": str(home), "RUNSTORE_CONFIG_DIR": os.environ["RUNSTORE_CONFIG_DIR"]}


def test_describe_uses_the_rule(home) -> None:
    first, second, mlp = _two_cnn_and_one_mlp()
    out = run_cli("describe", "cnn", extra_env=_env(home))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "Error: 2 runs are named 'cnn'" in out.stderr
    assert "Try: the alternative name" in out.stderr
    out = run_cli("describe", "mlp", extra_env=_env(home))
    assert out.returncode == 0 and mlp.alternative_name in out.stdout


def test_upload_uses_the_rule(home, server, alice) -> None:
    first, second, mlp = _two_cnn_and_one_mlp()
    env = {**_env(home), "RUNSTORE_SERVER": server.url, "RUNSTORE_TOKEN": alice}
    out = run_cli("upload", "cnn", extra_env=env)
    assert out.returncode == 1 and "Error: 2 runs are named 'cnn'" in out.stderr
    out = run_cli("upload", "mlp", extra_env=env)
    assert out.returncode == 0 and "Run created: /alice/default/mlp" in out.stdout, out.stderr
    out = run_cli("upload", second.alternative_name, extra_env=env)
    assert out.returncode == 0 and "Run created: /alice/default/cnn" in out.stdout, out.stderr


def test_syncd_retry_uses_the_rule(home, store: Store) -> None:
    first, second, mlp = _two_cnn_and_one_mlp()
    with store.write() as conn:
        conn.execute("UPDATE sync_state SET state = 'failed', last_error = 'x'")

    def retry(ref: str) -> subprocess.CompletedProcess:
        return syncd_cli("retry", ref, env={**node_env(home), **_env(home)})

    out = retry("cnn")
    assert out.returncode == 1 and "Error: 2 runs are named 'cnn'" in out.stderr
    assert store.read("SELECT COUNT(*) FROM sync_state WHERE state = 'failed'")[0][0] == 3
    out = retry(second.alternative_name)
    assert out.returncode == 0 and "requeued 1 run(s)" in out.stdout
    states = {r["uuid"]: r["state"] for r in store.read(
        "SELECT r.uuid, s.state FROM sync_state s JOIN runs r ON r.id = s.run_id")}
    assert states == {first.uuid: "failed", second.uuid: "pending", mlp.uuid: "failed"}
