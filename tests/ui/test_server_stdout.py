"""The server UI's stdout.log of a long log, with blobs in a directory and in a real
S3-compatible bucket (SeaweedFS): the page shows the last 64 KB from a line start (a ranged
read of the blob, never the whole file), the download is the whole file, byte for byte."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstore.remote import Client, upload_run
from runstore.store import Store
from tests.remote.rs_fixtures import make_run
from tests.s3_harness import SeaweedProcess
from tests.server_harness import ServerProcess
from tests.ui.test_server_ui import browser_session

TAIL_BYTES = 64 * 1024
LINES = 12_000   # about 400 KB of log


@pytest.fixture(params=["dir", "s3"])
def ui_server(request, tmp_path: Path) -> Iterator[ServerProcess]:
    if request.param == "dir":
        with ServerProcess(tmp_path / "srv") as server:
            yield server
        return
    with SeaweedProcess(tmp_path / "seaweed") as s3, ServerProcess(
            tmp_path / "srv", extra_env={**s3.env, "RUNSTORE_BLOBS": s3.blobs_url("ui")}
    ) as server:
        yield server


def test_a_long_stdout_shows_its_tail_and_downloads_whole(ui_server: ServerProcess,
                                                          tmp_path: Path) -> None:
    token = ui_server.add_user("alice")
    store = Store(tmp_path / "home")
    run = make_run(store, "long-log", n_metrics=5)
    local = Path(store.read("SELECT local_dir FROM runs WHERE uuid = ?", (run,))[0][0])
    local.mkdir(parents=True)
    log = b"".join(f"line {i:06d} <b>\u00e9t\u00e9</b> \u202eRTL\u202c\n".encode()
                   for i in range(LINES))
    (local / "stdout.log").write_bytes(log)
    with Client(ui_server.url, token) as client:
        assert upload_run(store, run, client).complete
    store.close()

    session = browser_session(ui_server.url, token)
    try:
        page = session.get(f"/ui/run/{run}")
        assert page.status_code == 200
        assert "the last 64 KB" in page.text
        shown = re.search(r'<pre class="stdout" id="stdout-tail">(.*?)</pre>', page.text,
                          re.S)
        assert shown is not None and "<b>" not in shown.group(1)  # escaped
        tail = html.unescape(shown.group(1))
        lines = tail.splitlines()
        # whole lines only, ending with the last one, at most 64 KB of them
        assert lines[-1] == f"line {LINES - 1:06d} <b>\u00e9t\u00e9</b> \u202eRTL\u202c"
        assert all(re.fullmatch(r"line \d{6} <b>\u00e9t\u00e9</b> \u202eRTL\u202c", x)
                   for x in lines)
        assert log.endswith(tail.encode())
        assert TAIL_BYTES - 100 < len(tail.encode()) <= TAIL_BYTES

        download = session.get(f"/ui/run/{run}/stdout.log")
        assert download.status_code == 200
        assert download.headers["content-type"] == "text/plain; charset=utf-8"
        assert download.headers["content-disposition"].startswith("attachment;")
        assert download.content == log
    finally:
        session.close()
