"""Fixtures of the web UI tests: one chromium per module (Debian's, driven by Playwright), a
real `runstore serve` with two users' runs uploaded through the sync protocol, and a real
`runstore ui` over a seeded local store. Screenshots go to test-artifacts/ui/ (git-ignored;
RUNSTORE_TEST_ARTIFACTS overrides the directory)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.server_harness import CLI, REPO_ROOT, ServerProcess, _env, free_port
from tests.ui.seed import Seeded, seed

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}


def artifacts_dir() -> Path:
    path = Path(os.environ.get("RUNSTORE_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts" / "ui")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing. Try: make chromium-bin (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh browser context (no cookies) per test; page errors fail the test."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text)
          if msg.type == "error" and "Content-Security-Policy" in msg.text else None)
    pg.set_default_timeout(15_000)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(pg, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    pg.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar lands mid-page
    pg.screenshot(path=str(path), full_page=True)
    return path


@dataclass
class ServerUI:
    server: ServerProcess
    alice: str
    bob: str
    seeded: Seeded
    bob_run: str
    alice_home: Path                              # alice's local store (the runs' stdout.log)


@pytest.fixture(scope="module")
def server_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerUI]:
    """`runstore serve` holding alice's seeded runs in /alice/vision and one run of bob's."""
    from runstore.remote import Client, upload_run
    from runstore.store import Store
    from tests.remote.rs_fixtures import make_run

    base = tmp_path_factory.mktemp("ui-server")
    with ServerProcess(base / "server") as server:
        alice, bob = server.add_user("alice"), server.add_user("bob")
        seeded = seed(base / "alice-home", base / "scratch")
        store = Store(base / "alice-home")
        with Client(server.url, alice) as client:
            for uuid in seeded.runs.values():
                upload_run(store, uuid, client, folder="/alice/vision", make_folder=True)
        store.close()
        bob_store = Store(base / "bob-home")
        bob_run = make_run(bob_store, "bobs-secret", n_metrics=20)
        bob_dir = Path(bob_store.read("SELECT local_dir FROM runs WHERE uuid = ?",
                                      (bob_run,))[0][0])
        bob_dir.mkdir(parents=True, exist_ok=True)
        (bob_dir / "stdout.log").write_text("bobs-secret output\n")
        with Client(server.url, bob) as client:
            upload_run(bob_store, bob_run, client, folder="/bob/private", make_folder=True)
        bob_store.close()
        yield ServerUI(server, alice, bob, seeded, bob_run, base / "alice-home")


@dataclass
class LocalUI:
    url: str
    home: Path
    seeded: Seeded
    proc: subprocess.Popen


@pytest.fixture(scope="module")
def local_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUI]:
    """A real `runstore ui` process over a seeded store (RUNSTORE_HOME)."""
    base = tmp_path_factory.mktemp("ui-local")
    home = base / "home"
    seeded = seed(home, base / "scratch")
    port = free_port()
    log = (base / "ui.log").open("wb")
    proc = subprocess.Popen([*CLI, "ui", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
                            env=_env({"RUNSTORE_HOME": str(home)}))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"runstore ui exited: {(base / 'ui.log').read_text()}")
            try:
                if httpx.get(url + "/ui/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"runstore ui did not answer: {(base / 'ui.log').read_text()}")
            time.sleep(0.1)
        yield LocalUI(url, home, seeded, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
