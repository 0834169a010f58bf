"""Bad bundles and faults while exporting: refused with the file named, nothing written.

Each case of the issue's "Bad input and faults" list that is not in test_bundle_import.py:
a bundle truncated at any file, a flipped byte in records.sqlite or a blob, a missing COMMIT,
a newer format or schema version, export while a run logs, a full disk while exporting.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from runstore.bundle import export_bundle, staging_store
from runstore.bundle.format import COMMIT, MANIFEST, RECORDS
from runstore.schema import MIGRATIONS
from runstore.store import Store
from tests.bundle.helpers import cli, source_with_runs
from tests.remote.rs_fixtures import local_rows


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    source, _ = source_with_runs(tmp_path / "node", tmp_path)
    made = export_bundle(source, tmp_path / "usb")
    assert made
    return made.path


def _blob(bundle: Path) -> Path:
    return sorted((bundle / "blobs").rglob("*"), key=lambda p: -p.stat().st_size
                  if p.is_file() else 0)[0]


# Refused before anything is written, so before any upload: a server that is not there shows
# that no request was needed (an upload attempt would report a connection error).
NO_SERVER = SimpleNamespace(url="http://127.0.0.1:9")


def _import_refused(tmp_path: Path, bundle: Path, *, into_store: bool = False):
    args = ["import", str(bundle)] + (["--into-store"] if into_store else [])
    out = cli(*args, home=tmp_path / "gateway", server=NO_SERVER, token="unused")
    assert out.returncode == 1, out.stdout
    gateway = (Store(tmp_path / "gateway") if into_store else
               staging_store(tmp_path / "gateway"))
    # nothing written: no run, no row, no blob, no record of the bundle
    for table in ("runs", "metrics", "blobs", "bundle_imports"):
        assert gateway.read(f"SELECT COUNT(*) FROM {table}")[0][0] == 0, table
    assert not any(p.is_file() for p in gateway.blobs_dir.rglob("*"))
    return out.stderr.strip().splitlines()


def _rewrite_manifest(bundle: Path, change) -> None:
    """Change the manifest and re-seal COMMIT (a bundle a newer runstore could have written)."""
    data = json.loads((bundle / MANIFEST).read_text())
    change(data)
    raw = json.dumps(data).encode()
    (bundle / MANIFEST).write_bytes(raw)
    (bundle / COMMIT).write_text(json.dumps(
        {"manifest_sha256": hashlib.sha256(raw).hexdigest()}))


@pytest.mark.parametrize("which", ["records", "blob", "manifest"])
def test_truncated_file_is_refused_naming_it(tmp_path: Path, bundle: Path,
                                            which: str):
    path = {"records": bundle / RECORDS, "blob": _blob(bundle),
            "manifest": bundle / MANIFEST}[which]
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    [line] = _import_refused(tmp_path, bundle)
    assert line.startswith(f"refused {bundle}: {path}")
    assert "Try: copy the" in line
    assert ("truncated" in line) if which != "manifest" else ("differs from the one in "
                                                             "COMMIT" in line)


@pytest.mark.parametrize("which", ["records", "blob"])
def test_flipped_byte_is_refused_naming_the_file(tmp_path: Path, bundle: Path,
                                                which: str):
    path = bundle / RECORDS if which == "records" else _blob(bundle)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    [line] = _import_refused(tmp_path, bundle)
    assert line.startswith(f"refused {bundle}: {path}: sha256 ")
    assert "differs from the manifest's" in line and "(the file is damaged)" in line


def test_missing_commit_is_never_imported(tmp_path: Path, bundle: Path):
    (bundle / COMMIT).unlink()
    [line] = _import_refused(tmp_path, bundle, into_store=True)
    assert line == (f"refused {bundle}: {bundle}: no COMMIT marker, so the bundle is "
                    "incomplete (an export or a copy that did not finish). Try: copy the whole "
                    "bundle again, COMMIT included.")


def test_newer_format_version_is_refused_naming_it(tmp_path: Path, bundle: Path):
    _rewrite_manifest(bundle, lambda d: d.update(format_version=2))
    [line] = _import_refused(tmp_path, bundle)
    assert "bundle format version 2 is newer than this runstore reads (up to 1)" in line
    assert line.endswith("Try: upgrade runstore on this machine.")


def test_newer_schema_version_is_refused_naming_it(tmp_path: Path, bundle: Path):
    newer = len(MIGRATIONS) + 1
    _rewrite_manifest(bundle, lambda d: d.update(schema_version=newer))
    [line] = _import_refused(tmp_path, bundle, into_store=True)
    assert f"bundle schema version {newer} is newer than this runstore's ({newer - 1})" in line


def test_records_that_are_not_a_database_are_refused(tmp_path: Path, bundle: Path):
    """Hashes that hold (a tool that wrote a bad bundle) do not make a bad file mergeable."""
    records = bundle / RECORDS
    records.write_bytes(b"not a database" * 100)

    def reseal(data):
        data["files"][RECORDS] = {"sha256": hashlib.sha256(records.read_bytes()).hexdigest(),
                                  "size": records.stat().st_size}

    _rewrite_manifest(bundle, reseal)
    [line] = _import_refused(tmp_path, bundle)
    assert line == (f"refused {bundle}: {records} cannot be merged (file is not a database); "
                    "nothing of it was written. Try: export the bundle again with runstore (or "
                    "check the tool that wrote it against docs/AIRGAP.md).")


def test_a_missing_path_says_so(tmp_path: Path):
    out = cli("import", str(tmp_path / "nowhere"), home=tmp_path / "gateway")
    assert (out.returncode, out.stderr) == (
        1, f"Error: {str(tmp_path / 'nowhere')!r} does not exist. Try: the path of a bundle "
        "directory (or of the directory holding bundles), or of a t9k .em directory.\n")


def test_a_file_is_neither_a_bundle_nor_an_em_directory(tmp_path: Path):
    """(A directory that is no bundle goes to the t9k .em importer: tests/t9k.)"""
    (tmp_path / "notes.txt").write_text("hello")
    out = cli("import", str(tmp_path / "notes.txt"), home=tmp_path / "gateway")
    assert (out.returncode, out.stderr) == (
        1, f"Error: {str(tmp_path / 'notes.txt')!r} is neither a runstore bundle nor a t9k .em "
        "directory. Try: a directory written by `runstore export`, or a .em, run or artifact "
        "directory.\n")


LOGGER = """
import sys, time
import runstore as em
run = em.create_run(name="live")
print("STARTED", flush=True)
for i in range(int(sys.argv[1])):
    run.log("train", {"loss": float(i)}, step=i)
    if i % 200 == 0:
        run.flush()
        time.sleep(0.01)
run.finish()
print("DONE", flush=True)
"""


def test_export_while_a_run_logs_is_consistent_and_loses_nothing(tmp_path: Path):
    """Bundles taken while a process logs: each a consistent snapshot, together every row once."""
    home = tmp_path / "node"
    script = tmp_path / "logger.py"
    script.write_text(textwrap.dedent(LOGGER))
    env = {**os.environ, "RUNSTORE_HOME": str(home)}
    logger = subprocess.Popen([sys.executable, str(script), "20000"], env=env,
                              stdout=subprocess.PIPE, text=True)
    assert logger.stdout is not None
    assert logger.stdout.readline().startswith("STARTED")
    source = Store(home)
    made = []
    while logger.poll() is None:
        result = export_bundle(source, tmp_path / "usb")
        if result:
            made.append(result)
    assert logger.wait(timeout=120) == 0
    logger.stdout.close()
    last = export_bundle(source, tmp_path / "usb")
    made += [last] if last else []
    assert len(made) >= 3  # several bundles were taken mid-run
    for result in made:
        conn = sqlite3.connect(result.path / RECORDS)
        for run_id, count in conn.execute("SELECT id, metric_count FROM runs"):
            seqs = [s for (s,) in conn.execute(
                "SELECT seq FROM metrics WHERE run_id = ? ORDER BY seq", (run_id,))]
            entry = result.runs[0]
            # the run's row says as many rows as the store held at that instant
            assert count == entry.rows_to and seqs == list(range(entry.rows_from,
                                                                  entry.rows_to))
        conn.close()
    assert [(r.runs[0].rows_from) for r in made[1:]] == [r.runs[0].rows_to for r in made[:-1]]
    laptop = Store(tmp_path / "laptop")
    import random

    from runstore.bundle import import_bundles
    shuffled = [m.path for m in made]
    random.Random(3).shuffle(shuffled)
    import_bundles(shuffled, store=laptop)
    (uuid,) = source.read("SELECT uuid FROM runs")[0]
    assert local_rows(laptop, uuid) == local_rows(source, uuid)
    assert len(local_rows(laptop, uuid)) == 20000
    assert laptop.read("SELECT status FROM runs")[0][0] == "Complete"


DISK_FULL = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
from runstore.store import Store
from runstore.bundle import export_bundle, BundleError
store = Store(os.environ["RUNSTORE_HOME"])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), hard))
try:
    export_bundle(store, sys.argv[1])
    print("EXPORTED")
except BundleError as exc:
    print("REFUSED", exc)
"""


# A store's first export copies database pages (backup API), a later one copies rows; the
# limit falls in records.sqlite or in the blob.
@pytest.mark.parametrize("later,limit", [(False, 20_000), (False, 150_000), (True, 20_000)])
def test_disk_full_while_exporting_writes_no_commit_and_marks_nothing(tmp_path: Path,
                                                                     later: bool, limit: int):
    source, uuids = source_with_runs(tmp_path / "node", tmp_path)
    usb = tmp_path / "usb"
    marked = {}
    if later:
        assert export_bundle(source, tmp_path / "earlier")
        from tests.remote.rs_fixtures import make_run

        make_run(source, "more", n_metrics=3000)
    for table in ("bundle_exports", "bundle_watermarks", "bundle_blobs_exported"):
        marked[table] = source.read(f"SELECT * FROM {table}")
    script = tmp_path / "full.py"
    script.write_text(textwrap.dedent(DISK_FULL))
    proc = subprocess.run([sys.executable, str(script), str(usb), str(limit)],
                          env={**os.environ, "RUNSTORE_HOME": str(tmp_path / "node")},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("REFUSED writing the bundle in ")
    assert "no COMMIT was written and nothing was marked exported. Try: free space" in \
        proc.stdout
    assert list(usb.iterdir()) == []  # the partial bundle was removed, nothing committed
    for table, rows in marked.items():
        assert [tuple(r) for r in source.read(f"SELECT * FROM {table}")] == \
            [tuple(r) for r in rows], table
    # space returns: the next export carries everything not carried before
    made = export_bundle(source, usb)
    assert made and made.manifest.sequence == (2 if later else 1)
    assert made.metric_rows == (3000 if later else 3070)
    assert made.blobs == (0 if later else 2)
