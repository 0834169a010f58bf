"""A run's stdout.log goes up with the run (upload_run, against a real `runstore serve`): as a
blob (streamed, resumable, deduplicated), then set on the run; the newer (longer) copy replaces
the older one, a stale shorter one never does; only the owner may set or read it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from rs_fixtures import finish, make_run

from runstore.errors import PermanentRemoteError
from runstore.remote import Client, upload_run
from runstore.store import Store
from tests.server_harness import FaultProxy

STDOUT = "stdout.log"


def stdout_of(store: Store, run: str) -> Path:
    local = Path(store.read("SELECT local_dir FROM runs WHERE uuid = ?", (run,))[0][0])
    local.mkdir(parents=True, exist_ok=True)
    return local / STDOUT


def server_stdout(client: Client, run: str) -> bytes | None:
    """The server's stdout.log of the run (None: it has none)."""
    try:
        return client.request("GET", f"/runs/{run}/files/{STDOUT}")
    except PermanentRemoteError as exc:
        if exc.status_code == 404:
            return None
        raise


def put_blob(client: Client, data: bytes) -> str:
    """Send bytes as a blob the way the client does (POST /uploads, PATCH), as this user."""
    sha = hashlib.sha256(data).hexdigest()
    status = client.request("POST", "/uploads", json={"sha256": sha, "size_bytes": len(data)})
    if not status["complete"]:
        client.request("PATCH", f"/uploads/{sha}", params={"offset": 0, "size": len(data)},
                       content=lambda: data,
                       headers={"Content-Type": "application/octet-stream"})
    return sha


def test_stdout_of_a_live_run_grows_on_the_server_and_resending_is_a_no_op(store, client):
    run = make_run(store, "live", n_metrics=10, status="Running")
    log = stdout_of(store, run)
    log.write_bytes(b"epoch 0: loss=2.5\n")
    first = upload_run(store, run, client)
    assert not first.complete  # a Running run goes up as far as it is
    assert server_stdout(client, run) == b"epoch 0: loss=2.5\n"

    with log.open("ab") as fh:  # the script printed more, then the run ended
        fh.write(b"".join(f"epoch {i}: loss={1 / i:.4f}\n".encode() for i in range(1, 5000)))
    finish(store, run)
    done = upload_run(store, run, client)
    assert done.complete
    assert server_stdout(client, run) == log.read_bytes()

    again = upload_run(store, run, client)  # the same content: nothing sent, nothing changed
    assert again.outcome == "resumed" and again.bytes_sent == 0
    assert server_stdout(client, run) == log.read_bytes()


def test_a_run_without_stdout_or_with_an_empty_one_uploads_without_it(store, client):
    missing = make_run(store, "quiet")
    empty = make_run(store, "silent")
    stdout_of(store, empty).write_bytes(b"")
    for run in (missing, empty):
        result = upload_run(store, run, client)
        assert result.complete and result.bytes_sent == 0
        assert server_stdout(client, run) is None


def test_a_shorter_copy_never_replaces_a_longer_one(store, client):
    """A slow upload that read the log earlier (a live upload racing the final one) arrives
    last: the server keeps the longer copy and says so; the same length, rewritten, wins."""
    run = make_run(store, "race")
    log = stdout_of(store, run)
    log.write_bytes(b"line 1\nline 2\n")
    upload_run(store, run, client)
    short = put_blob(client, b"line 1\n")
    kept = client.request("PUT", f"/runs/{run}/files/{STDOUT}",
                          json={"sha256": short, "size_bytes": 7})
    assert kept == {"path": STDOUT, "sha256": hashlib.sha256(log.read_bytes()).hexdigest(),
                    "size_bytes": 14}
    assert server_stdout(client, run) == b"line 1\nline 2\n"
    rewritten = put_blob(client, b"LINE 1\nLINE 2\n")
    kept = client.request("PUT", f"/runs/{run}/files/{STDOUT}",
                          json={"sha256": rewritten, "size_bytes": 14})
    assert kept["sha256"] == rewritten
    assert server_stdout(client, run) == b"LINE 1\nLINE 2\n"


def test_only_the_owner_sets_or_reads_a_runs_stdout(store, server, client):
    run = make_run(store, "mine")
    stdout_of(store, run).write_bytes(b"alice's secret output\n")
    upload_run(store, run, client)
    alices_sha = hashlib.sha256(b"alice's secret output\n").hexdigest()
    bob_token = server.add_user("bob")
    with Client(server.url, bob_token, max_backoff_s=0.05) as bob:
        for method, body in (("GET", None), ("PUT", {"sha256": alices_sha, "size_bytes": 22})):
            with pytest.raises(PermanentRemoteError) as refused:
                bob.request(method, f"/runs/{run}/files/{STDOUT}", json=body)
            assert refused.value.status_code == 404
        # his own run cannot point at alice's bytes (he never sent them), to read them back
        bobs = make_run(store, "bobs")
        upload_run(store, bobs, bob)
        with pytest.raises(PermanentRemoteError) as refused:
            bob.request("PUT", f"/runs/{bobs}/files/{STDOUT}",
                        json={"sha256": alices_sha, "size_bytes": 22})
        assert refused.value.status_code == 409 and "upload blob" in str(refused.value)
        assert server_stdout(bob, bobs) is None
        mine = put_blob(bob, b"bob\n")
        for body, status in (({"sha256": mine, "size_bytes": 5}, 422),   # not its size
                             ({"sha256": "ab" * 10, "size_bytes": 4}, 422)):  # not a sha256
            with pytest.raises(PermanentRemoteError) as refused:
                bob.request("PUT", f"/runs/{bobs}/files/{STDOUT}", json=body)
            assert refused.value.status_code == status, body
        with pytest.raises(PermanentRemoteError) as refused:  # only the files it keeps
            bob.request("PUT", f"/runs/{bobs}/files/metadata.yaml",
                        json={"sha256": mine, "size_bytes": 4})
        assert refused.value.status_code == 422 and "stdout.log" in str(refused.value)
    assert server_stdout(client, run) == b"alice's secret output\n"
    anonymous = httpx.get(f"{server.url}/api/v1/runs/{run}/files/{STDOUT}")
    assert anonymous.status_code == 401


def test_a_huge_stdout_streams_in_parts_and_resumes_after_a_cut(store, server, alice):
    """20 MB of log: three blob parts, never a JSON body; a part cut on the wire resumes at
    the server's offset and the bytes arrive whole."""
    run = make_run(store, "chatty")
    log = stdout_of(store, run)
    with log.open("wb") as fh:
        for _ in range(20):
            fh.write(os.urandom(512 * 1024).hex().encode()[:1 << 20])
    with FaultProxy(server.port) as proxy:
        proxy.cut_request(b"PATCH /api/v1/uploads", after_bytes=3_000_000, times=1)
        with Client(proxy.url, alice, max_backoff_s=0.05) as client:
            result = upload_run(store, run, client)
            assert result.complete and proxy.faults_triggered == 1
            # the part's bytes that arrived before the cut were kept: resumed, not resent
            assert (20 << 20) - 3_000_000 <= result.bytes_sent < 20 << 20
            assert server_stdout(client, run) == log.read_bytes()


def test_a_run_the_server_lost_to_a_replace_gets_its_stdout_again(store, client):
    """This process sent the log before; the server's copy of the run was replaced since (a
    run of the same name, strategy 'replace'): uploaded again, it is a new copy, and its log
    goes with it, although this process remembers having sent those bytes."""
    first = make_run(store, "same-name")
    stdout_of(store, first).write_bytes(b"the first run's log\n")
    upload_run(store, first, client)
    second = make_run(store, "same-name", strategy="replace")
    assert upload_run(store, second, client).outcome == "replaced"
    assert server_stdout(client, first) is None  # gone with its run
    again = upload_run(store, first, client, conflict_strategy="new")
    assert again.outcome == "renamed"
    assert server_stdout(client, first) == b"the first run's log\n"
