"""A 100 MB artifact survives a server kill mid-upload; the CLI reports errors in one line."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from rs_fixtures import link, make_run

from runstore.errors import TransientRemoteError
from runstore.remote import Client, upload_run
from runstore.store import Store
from tests.server_harness import run_cli

SIZE = 100 * 1024 * 1024


def big_artifact(store: Store, tmp_path) -> tuple[str, str]:
    src = tmp_path / "weights.bin"
    block = os.urandom(1 << 20)
    with src.open("wb") as fh:
        for i in range(SIZE >> 20):
            fh.write(hashlib.sha256(block + bytes([i % 256])).digest() * 32768)
    sha, size = store.put_blob_file(src)
    src.unlink()
    import uuid as uuidlib
    art = str(uuidlib.uuid4())
    with store.write() as conn:
        art_id = conn.execute(
            "INSERT INTO artifacts (uuid, name, alternative_name, created_timestamp, local_dir)"
            " VALUES (?, 'model', 'model_240101_000000_abcdef', 't', ?)",
            (art, str(tmp_path))).lastrowid
        conn.execute("INSERT OR IGNORE INTO blobs (sha256, size_bytes) VALUES (?, ?)",
                     (sha, size))
        conn.execute("INSERT INTO artifact_objects (artifact_id, path, kind, sha256, size_bytes)"
                     " VALUES (?, 'weights.bin', 'file', ?, ?)", (art_id, sha, size))
    return art, sha


def part_size(server) -> int:
    parts = list((server.data_dir / "uploads").glob("*.part"))
    return parts[0].stat().st_size if parts else 0


def test_big_artifact_survives_server_kill_and_completes_on_retry(store, server, alice,
                                                                 tmp_path):
    art, sha = big_artifact(store, tmp_path)
    run = make_run(store, "train", n_metrics=10, status="Running")
    link(store, run, art, "output")
    with store.write() as conn:
        conn.execute("UPDATE runs SET status = 'Complete', end_timestamp = 't' WHERE uuid = ?",
                     (run,))
    errors: list[BaseException] = []

    def first_attempt():
        with Client(server.url, alice, max_attempts=2, sleep=lambda s: None) as c:
            try:
                upload_run(store, run, c)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)
    thread = threading.Thread(target=first_attempt)
    thread.start()
    deadline = time.monotonic() + 60
    while part_size(server) < 20 * 1024 * 1024:
        assert time.monotonic() < deadline, "upload never got going"
        assert thread.is_alive(), f"upload ended early: {errors}"
        time.sleep(0.01)
    server.kill()
    thread.join(60)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TransientRemoteError), errors
    kept = part_size(server)
    assert 0 < kept < SIZE
    assert not (server.data_dir / "blobs" / sha[:2] / sha).exists()

    server.start()
    with Client(server.url, alice) as c:
        result = upload_run(store, run, c)
        assert result.complete and result.blobs_sent == 1
        # Resumed: far less than the whole file went up again (at most one part re-sent).
        assert result.bytes_sent <= SIZE - kept + 8 * 1024 * 1024
        digest = hashlib.sha256()
        c.stream_to(f"/blobs/{sha}", digest.update)
        assert digest.hexdigest() == sha
    assert (server.data_dir / "blobs" / sha[:2] / sha).stat().st_size == SIZE
    assert list((server.data_dir / "uploads").glob("*.part")) == []


def test_cli_login_upload_logout(store, server, alice, tmp_path, isolated_env):
    env = {"RUNSTORE_HOME": str(isolated_env), "RUNSTORE_CONFIG_DIR": str(tmp_path / "config")}
    run = make_run(store, "clirun", n_metrics=50)
    store.close()
    done = run_cli("upload", "clirun", extra_env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: not logged in") and "Traceback" not in done.stderr
    done = run_cli("login", "--host", server.url, "--token", "rst_000000000000_" + "x" * 43,
                   extra_env=env)
    assert done.returncode == 1 and "invalid token" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("login", "--host", server.url, "--token", alice, extra_env=env)
    assert done.returncode == 0, done.stderr
    assert oct((tmp_path / "config" / "credentials.toml").stat().st_mode & 0o777) == "0o600"
    done = run_cli("upload", "clirun", "-f", "a/b", extra_env=env)
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "Folder does not exist: /alice/a/b" in done.stderr
    done = run_cli("upload", "clirun", "-f", "a/b", "-m", extra_env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Run created: /alice/a/b/clirun"
    done = run_cli("upload", "clirun", "-c", "merge", extra_env=env)
    assert done.returncode == 2 and "'merge' is not one of" in done.stderr
    with Client(server.url, alice) as c:
        assert c.request("GET", f"/runs/{run}")["metric_count"] == 50
    done = run_cli("logout", extra_env=env)
    assert done.returncode == 0 and not (tmp_path / "config" / "credentials.toml").exists()


@pytest.mark.parametrize("status", [401])
def test_revoked_token_is_a_permanent_error(store, server, alice, status):
    from runstore.errors import PermanentRemoteError

    run = make_run(store, "r")
    server.revoke_user("alice")
    with Client(server.url, alice) as c, pytest.raises(PermanentRemoteError) as info:
        upload_run(store, run, c)
    assert info.value.status_code == status and "token revoked" in str(info.value)
