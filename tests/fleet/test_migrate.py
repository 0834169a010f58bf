"""`runstore server migrate`: a SQLite + directory server moved to PostgreSQL + an S3 bucket
(real ones: tests/pg_harness.py, tests/s3_harness.py), then served from there with the same
tokens, every run, metric row and blob intact, and new uploads working (ids move on)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import httpx

from runstore.protocol import API_PREFIX as API
from runstore.remote import Client, upload_run
from runstore.store import Store
from tests.remote.rs_fixtures import link, local_rows, make_artifact, make_run, same_rows
from tests.remote.rs_fixtures import server_rows as fetch_rows
from tests.s3_harness import SeaweedProcess
from tests.server_harness import ServerProcess, run_cli


def stdout_of(store: Store, run: str) -> Path:
    local = Path(store.read("SELECT local_dir FROM runs WHERE uuid = ?", (run,))[0][0])
    local.mkdir(parents=True, exist_ok=True)
    return local / "stdout.log"


def test_migrate_sqlite_and_directory_to_postgres_and_s3(tmp_path: Path, pg_url: str):
    store = Store(tmp_path / "home")
    big = secrets.token_bytes(9 * 1024 * 1024)
    runs = []
    for i in range(3):
        run = make_run(store, f"r{i}", n_metrics=2500 + i, folder="proj", make_folder=True)
        art = make_artifact(store, tmp_path, f"a{i}", files={
            "w.bin": big if i == 0 else secrets.token_bytes(100), "same.txt": b"same"})
        link(store, run, art, "output")
        runs.append(run)
    log = b"".join(b"epoch %d done\n" % i for i in range(1000))
    stdout_of(store, runs[1]).write_bytes(log)  # a run's stdout.log: a blob and a pointer
    old = ServerProcess(tmp_path / "old")
    with old:
        token = old.add_user("alice")
        with Client(old.url, token) as client:
            for run in runs:
                assert upload_run(store, run, client).complete

    with SeaweedProcess(tmp_path / "s3") as s3:
        blobs = s3.blobs_url("migrated")
        done = run_cli("server", "migrate", "--from-data", str(old.data_dir),
                       "--to-database", pg_url, "--to-blobs", blobs, extra_env=s3.env,
                       timeout_s=300)
        assert done.returncode == 0, done.stderr
        figures = dict(kv.split("=") for kv in done.stdout.split())
        assert figures["runs"] == "3" and figures["metrics"] == str(3 * 2500 + 3)
        # the big one, two small ones, "same" once, the stdout.log
        assert figures["blobs_copied"] == "5" and figures["t9k_run_files"] == "1"
        # Running it again: refused, one line, nothing changed.
        again = run_cli("server", "migrate", "--from-data", str(old.data_dir),
                        "--to-database", pg_url, "--to-blobs", blobs, extra_env=s3.env)
        assert again.returncode == 1
        assert "Error: the new database already holds" in again.stderr
        assert "Try: an empty database" in again.stderr and "Traceback" not in again.stderr

        new = ServerProcess(tmp_path / "new", database_url=pg_url,
                            extra_env={**s3.env, "RUNSTORE_BLOBS": blobs})
        with new, Client(new.url, token) as client:  # the old token works
            for run in runs:
                assert same_rows(fetch_rows(client, run), local_rows(store, run))
                assert client.request("GET", f"/runs/{run}")["complete"]
            sha = hashlib.sha256(big).hexdigest()
            got = httpx.get(f"{new.url}{API}/blobs/{sha}", timeout=60,
                            headers={"Authorization": f"Bearer {token}"})
            assert got.status_code == 200 and got.content == big
            assert client.request("GET", f"/runs/{runs[1]}/files/stdout.log") == log
            # New rows after the migration: ids continue past the copied ones.
            more = make_run(store, "after", n_metrics=10, folder="proj")
            stdout_of(store, more).write_bytes(b"on PostgreSQL + S3 now\n")
            assert upload_run(store, more, client).complete
            assert client.request("GET", f"/runs/{more}/files/stdout.log") == \
                b"on PostgreSQL + S3 now\n"
            assert new.add_user("bob")
        assert s3.list_keys("migrated/uploads/") == []


def test_migrate_refuses_a_directory_without_a_server_database(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    done = run_cli("server", "migrate", "--from-data", str(tmp_path / "empty"),
                   "--to-database", f"sqlite:///{tmp_path / 'new.db'}", "--to-blobs",
                   str(tmp_path / "newblobs"))
    assert done.returncode == 1
    assert f"Error: no server database in {tmp_path / 'empty'} (no server.db). Try: " \
           in done.stderr
    assert not (tmp_path / "new.db").exists()
