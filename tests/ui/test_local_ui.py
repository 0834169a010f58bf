"""`runstore ui` over the local store, in a real browser and while a training process writes:
folders, runs table, run page with stdout, charts, compare, artifact download; read-only and
never in a writer's way; reachable only as a loopback host; no login."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from tests.server_harness import run_cli
from tests.ui import seed as S
from tests.ui.conftest import shot
from tests.ui.test_server_ui import chart, names_in_table, run_link, wait_charts


def test_local_pages_without_login(page, local_ui) -> None:
    base = local_ui.url
    page.goto(base + "/")
    assert page.url == base + "/ui/"
    assert page.locator(".note").inner_text() == "local store, read-only"
    assert page.locator("text=Log out").count() == 0
    page.click(f"a.folder:has-text('{S.FOLDER}')")
    page.wait_for_url(re.compile(r"/ui/folder\?path=vision"))
    page.click("table.runs th.hp a:has-text('lr')")          # sort by an hparam column
    page.wait_for_url(re.compile(r"sort=h%3Alr"))
    assert names_in_table(page)[:2] == ["diverged", "lr-sweep-2"]  # lr 0.3, 0.01
    shot(page, "local-runs")

    run_link(page, "baseline").click()
    wait_charts(page)
    loss = chart(page, "loss")
    assert loss["series"] == 1 and loss["raw"] == [False]
    assert 0 < loss["points"][0] <= 2 * loss["width"]
    assert S.SPIKE_VALUE in loss["maxes"]
    assert chart(page, "accuracy")["points"] == [S.SHORT_STEPS]
    tail = page.locator("#stdout-tail").inner_text()
    assert tail.startswith("epoch 0: loss=") and S.HOSTILE_SCRIPT in tail
    with page.expect_download() as info:
        page.click("a:has-text('Download full log')")
    assert Path(info.value.path()).read_text().endswith(f"done {S.HOSTILE_SCRIPT}\n")
    assert page.evaluate("window.__pwned") is None
    shot(page, "local-run")

    page.click("#lineage a:has-text('cifar10')")
    page.wait_for_url(re.compile(r"/ui/artifact/"))
    consumers = page.locator("#art-lineage a").all_inner_texts()
    assert sorted(consumers) == ["baseline", "diverged", "lr-sweep-1", "lr-sweep-2"]
    with page.expect_download() as info:
        page.click("#objects a:has-text('Download')")
    assert Path(info.value.path()).read_text() == "x,y\n1,2\n3,4\n"
    shot(page, "local-artifact")


def test_local_compare_and_hostile(page, local_ui) -> None:
    runs = local_ui.seeded.runs
    page.goto(f"{local_ui.url}/ui/compare?run={runs['baseline']}&run={runs['diverged']}")
    wait_charts(page)
    assert chart(page, "loss")["series"] == 2
    # the diverged run's loss ends in +inf: a gap with a marker, not a chart error
    loss = page.request.get(f"{local_ui.url}/ui/api/series?run={runs['diverged']}"
                            "&type=train&key=loss&points=1000").json()
    assert loss["posinf"] == [299] and loss["y"][-1] is None and loss["raw"]
    shot(page, "local-compare-inf")
    page.check("#only-diff")
    assert page.locator("table.compare tr.same").first.is_hidden()
    page.goto(f"{local_ui.url}/ui/run/{runs['hostile']}")
    wait_charts(page)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#stdout-tail").inner_text().splitlines() == [
        S.HOSTILE_SCRIPT, S.HOSTILE_IMG, S.RTL]
    shot(page, "local-hostile")


def test_reads_never_block_a_training_process(local_ui) -> None:
    """A run logs and flushes while the UI is being read as fast as it answers; nothing fails
    and the new run shows up, with every point."""
    from runstore.run import Run
    from runstore.store import Store

    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        with httpx.Client(base_url=local_ui.url, timeout=10) as client:
            while not stop.is_set():
                for path in ("/ui/folder?path=vision",
                             f"/ui/run/{local_ui.seeded.runs['baseline']}",
                             f"/ui/api/series?run={local_ui.seeded.runs['baseline']}"
                             "&type=train&key=loss&points=800"):
                    r = client.get(path)
                    if r.status_code != 200:
                        errors.append(f"{path}: {r.status_code}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    store = Store(local_ui.home)
    try:
        run = Run({"name": "live", "_target": {"folder": S.FOLDER}}, store=store)
        for step in range(3000):
            run.log("train", {"loss": 1.0 / (step + 1)}, step=step)
            if step % 300 == 0:
                run.flush()
        run.flush()
        run._end_run("Complete")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        store.close()
    assert not errors
    got = httpx.get(f"{local_ui.url}/ui/api/series", params={
        "run": run.uuid, "type": "train", "key": "loss", "points": 4000}).json()
    assert got["raw"] and len(got["x"]) == 3000 and got["n"] == 3000


def test_local_connection_is_read_only(local_ui) -> None:
    from runstore.ui.local import LocalData

    with LocalData(local_ui.home).connect() as conn, pytest.raises(sqlite3.OperationalError,
                                                                   match="readonly|read-only"):
        conn.execute("UPDATE runs SET name = 'x'")


def test_only_loopback_host_names_are_answered(local_ui) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 gets nothing."""
    r = httpx.get(local_ui.url + "/ui/", headers={"Host": "evil.example:8751"})
    assert r.status_code == 400
    assert "vision" not in r.text


def test_bad_query_values_get_a_clear_error(local_ui) -> None:
    r = httpx.get(local_ui.url + "/ui/folder", params={"path": "vision", "status": "Done"})
    assert r.status_code == 400
    assert "status=&#39;Done&#39; is not one of Running, Complete, Error" in r.text
    r = httpx.get(local_ui.url + "/ui/api/series", params={
        "run": local_ui.seeded.runs["baseline"], "type": "train", "key": "loss", "lo": "x"})
    assert r.status_code == 400 and r.json()["detail"].startswith("lo='x' is not an integer")


def test_ui_without_a_store_says_what_to_do(tmp_path: Path) -> None:
    done = run_cli("ui", "--port", "0", extra_env={"RUNSTORE_HOME": str(tmp_path / "none")})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"Error: no local store at '{tmp_path / 'none' / 'runstore.db'}'. Try: log a run "
        "first, or set RUNSTORE_HOME to the store's directory")
    assert not (tmp_path / "none").exists()  # nothing created
