"""upload_run against a real `runstore serve`: t9k's conflict strategies, idempotency, resume."""

from __future__ import annotations

import math

import httpx
import pytest
from rs_fixtures import (
    add_metrics,
    finish,
    link,
    local_rows,
    make_artifact,
    make_run,
    same_rows,
    server_rows,
)

from runstore.errors import ConflictError, PermanentRemoteError, TransientRemoteError
from runstore.remote import Client, FolderNotFoundError, download_run, list_remote, upload_run
from runstore.store import Store
from tests.server_harness import FaultProxy, free_port


@pytest.fixture
def client(server, alice):
    with Client(server.url, alice, max_backoff_s=0.05) as c:
        yield c






def folder_runs(client: Client, folder: str = "/alice/default") -> dict[str, str]:
    return {n["path"]: n["uuid"] for n in list_remote(folder, client)}


def test_upload_roundtrip_nan_inf_history_and_sync_state(store: Store, client: Client):
    run = make_run(store, "exp", n_metrics=45_123)
    result = upload_run(store, run, client)
    assert result.outcome == "created"
    assert result.remote_path == "/alice/default/exp"
    assert result.metrics_sent == 45_123 and result.complete
    rows = server_rows(client, run)
    assert same_rows(rows, local_rows(store, run))
    assert any(r[4] is None for r in rows) and any(r[4] == math.inf for r in rows)
    assert any(r[4] == -math.inf for r in rows)
    state = store.read("SELECT s.state, s.remote_path, s.metrics_acked FROM sync_state s "
                       "JOIN runs r ON r.id = s.run_id WHERE r.uuid = ?", (run,))[0]
    assert tuple(state) == ("synced", "/alice/default/exp", 45_123)
    hist = store.read("SELECT action, host, path, remote_id FROM remote_history "
                      "WHERE entity_uuid = ?", (run,))
    assert [tuple(h) for h in hist] == [("upload", client.host, "/alice/default/exp", run)]
    detail = client.request("GET", f"/runs/{run}")
    assert detail["complete"] and detail["metadata"]["status"] == "Complete"
    assert detail["metadata"]["hparams"] == {"lr": 0.001}
    assert detail["metadata"]["remote"][-1]["action"] == "upload"
    listed = list_remote("default", client)
    assert listed == [{"name": "exp", "alternative_name": detail["alternative_name"],
                       "uuid": run, "status": "Complete",
                       "start_timestamp": "2024-01-02T03:04:05.123456+00:00",
                       "end_timestamp": "2024-01-02T04:00:00.000000+00:00", "labels": ["l1"],
                       "path": "/alice/default/exp", "complete": True}]


def test_uploading_twice_leaves_one_copy(store: Store, client: Client):
    run = make_run(store, "exp", n_metrics=1000)
    first = upload_run(store, run, client)
    second = upload_run(store, run, client)
    assert (first.outcome, second.outcome) == ("created", "resumed")
    assert second.metrics_sent == 0 and second.remote_path == first.remote_path
    assert folder_runs(client) == {"/alice/default/exp": run}
    assert len(server_rows(client, run)) == 1000


@pytest.mark.parametrize("strategy", ["skip", "error", "new", "replace"])
def test_conflict_strategies_match_t9k(store: Store, client: Client, strategy: str):
    old = make_run(store, "exp", n_metrics=10)
    upload_run(store, old, client)
    new = make_run(store, "exp", n_metrics=25, strategy=strategy)
    new_alt = store.read("SELECT alternative_name FROM runs WHERE uuid = ?", (new,))[0][0]
    if strategy == "error":
        with pytest.raises(ConflictError, match="already exists in Folder /alice/default"):
            upload_run(store, new, client)
        assert isinstance(ConflictError("x"), RuntimeError)
        assert folder_runs(client) == {"/alice/default/exp": old}
        state = store.read("SELECT state FROM sync_state s JOIN runs r ON r.id = s.run_id "
                           "WHERE r.uuid = ?", (new,))[0][0]
        assert state == "pending"
        return
    result = upload_run(store, new, client)
    if strategy == "skip":
        assert result.outcome == "skipped" and result.metrics_sent == 0
        assert folder_runs(client) == {"/alice/default/exp": old}
        assert len(server_rows(client, old)) == 10
        # The user asked to skip: marked synced (pointing at the existing node), so syncd
        # does not retry it forever; no upload history record since nothing went up.
        state = store.read("SELECT state, remote_path FROM sync_state s JOIN runs r "
                           "ON r.id = s.run_id WHERE r.uuid = ?", (new,))[0]
        assert tuple(state) == ("synced", "/alice/default/exp")
    elif strategy == "new":
        assert result.outcome == "renamed"
        assert result.remote_path == f"/alice/default/{new_alt}"
        assert folder_runs(client) == {"/alice/default/exp": old,
                                       f"/alice/default/{new_alt}": new}
        assert len(server_rows(client, new)) == 25
    else:
        assert result.outcome == "replaced" and result.remote_path == "/alice/default/exp"
        assert folder_runs(client) == {"/alice/default/exp": new}
        assert len(server_rows(client, new)) == 25
        with pytest.raises(PermanentRemoteError, match="not found") as gone:
            client.request("GET", f"/runs/{old}")
        assert gone.value.status_code == 404


def test_unknown_strategy_refused_before_anything_is_sent(store: Store):
    sent = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    run = make_run(store, "exp")
    with Client("http://127.0.0.1:9", "t", transport=transport) as c:
        with pytest.raises(ValueError, match="conflict_strategy 'merge'"):
            upload_run(store, run, c, conflict_strategy="merge")
    assert sent == []


def test_missing_folder_needs_make_folder(store: Store, client: Client):
    run = make_run(store, "exp", folder="proj/sub")
    with pytest.raises(FolderNotFoundError, match="Folder does not exist") as info:
        upload_run(store, run, client)
    assert isinstance(info.value, ValueError)
    result = upload_run(store, run, client, make_folder=True)
    assert result.remote_path == "/alice/proj/sub/exp"
    assert client.request("GET", "/folders/alice/proj")["folders"] == ["/alice/proj/sub"]


def test_running_run_goes_up_incrementally(store: Store, client: Client):
    run = make_run(store, "live", n_metrics=300, status="Running")
    first = upload_run(store, run, client)
    assert not first.complete and first.metrics_sent == 300
    assert client.request("GET", f"/runs/{run}")["metadata"]["status"] == "Running"
    assert not store.read("SELECT 1 FROM sync_state s JOIN runs r ON r.id = s.run_id "
                          "WHERE r.uuid = ? AND s.state = 'synced'", (run,))
    add_metrics(store, run, 200)
    finish(store, run)
    second = upload_run(store, run, client)
    assert second.outcome == "resumed" and second.metrics_sent == 200 and second.complete
    assert same_rows(server_rows(client, run), local_rows(store, run))


@pytest.mark.parametrize("pattern", [b"/runs/claim", b"/metrics", b"/lineage", b"/finalize",
                                     b"/artifacts/claim", b"PATCH /api/v1/uploads"])
def test_lost_acknowledgements_never_duplicate(store: Store, server, alice, tmp_path,
                                               pattern: bytes):
    run = make_run(store, "exp", n_metrics=65_000)
    art = make_artifact(store, tmp_path, "data")
    link(store, run, art, "output")
    with FaultProxy(server.port) as proxy, \
            Client(proxy.url, alice, max_backoff_s=0.01, sleep=lambda s: None) as c:
        proxy.lose_response(pattern, times=2)
        result = upload_run(store, run, c)
        assert proxy.faults_triggered == 2
    assert result.complete
    with Client(server.url, alice) as c:
        assert folder_runs(c) == {"/alice/default/exp": run}
        assert same_rows(server_rows(c, run), local_rows(store, run))
        arts = [n for n in c.request("GET", "/folders/alice/default")["nodes"]
                if n["kind"] == "Artifact"]
        assert [a["uuid"] for a in arts] == [art]


def test_connection_cut_mid_chunk_resumes(store: Store, server, alice):
    run = make_run(store, "exp", n_metrics=70_000)
    with FaultProxy(server.port) as proxy, \
            Client(proxy.url, alice, max_backoff_s=0.01, sleep=lambda s: None) as c:
        proxy.cut_request(b"PUT /api/v1/runs/", after_bytes=300_000, times=3)
        result = upload_run(store, run, c)
        assert proxy.faults_triggered == 3
    assert result.metrics_sent == 70_000
    with Client(server.url, alice) as c:
        assert same_rows(server_rows(c, run), local_rows(store, run))


def test_server_away_gives_transient_error_then_resumes(store: Store, server, alice):
    run = make_run(store, "exp", n_metrics=100)
    slept = []
    with Client(f"http://127.0.0.1:{free_port()}", alice, max_attempts=3,
                sleep=slept.append) as c:
        with pytest.raises(TransientRemoteError, match="ConnectError"):
            upload_run(store, run, c)
    assert len(slept) == 2 and all(0 <= s <= 10 for s in slept)
    assert store.read("SELECT COUNT(*) FROM sync_state WHERE state = 'synced'")[0][0] == 0
    with Client(server.url, alice) as c:
        assert upload_run(store, run, c).outcome == "created"


def test_artifacts_lineage_and_download(store: Store, client: Client, tmp_path):
    data = make_artifact(store, tmp_path, "data", files={"x/train.csv": b"a,b\n1,2\n"})
    model = make_artifact(store, tmp_path, "model", files={"w.bin": b"\x07" * 5000})
    run = make_run(store, "train", n_metrics=777, status="Running")
    link(store, run, data, "input")
    link(store, run, model, "output")
    finish(store, run)
    result = upload_run(store, run, client)
    assert result.blobs_sent == 2
    detail = client.request("GET", f"/runs/{run}")
    assert [e["artifact_uuid"] for e in detail["lineage"]["input"]] == [data]
    assert [e["artifact_uuid"] for e in detail["lineage"]["output"]] == [model]
    assert sorted(detail["artifacts"]) == sorted([data, model])
    # A second upload sends no blob again.
    assert upload_run(store, run, client).blobs_sent == 0

    other = Store(tmp_path / "other-home")
    assert download_run(other, "default/train", client) == run
    assert same_rows(local_rows(other, run), local_rows(store, run))
    objs = other.read("SELECT o.path, o.sha256 FROM artifact_objects o JOIN artifacts a ON "
                      "a.id = o.artifact_id WHERE a.uuid = ? AND o.kind = 'file'", (model,))
    assert [o["path"] for o in objs] == ["w.bin"]
    assert other.blob_path(objs[0]["sha256"]).read_bytes() == b"\x07" * 5000
    assert other.read("SELECT COUNT(*) FROM associations")[0][0] == 2
    hist = other.read("SELECT action, path FROM remote_history WHERE entity_uuid = ?", (run,))
    assert [tuple(h) for h in hist] == [("download", "/alice/default/train")]
    other.close()
