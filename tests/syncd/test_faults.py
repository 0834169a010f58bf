"""Faults, each with the REAL daemon and the REAL server: kills at the dangerous instants and
at random ones, 5xx/429, a hung server, a lost acknowledgement. After each, the server holds
exactly one complete copy of each run and every row once.

RUNSTORE_SOAK=N multiplies the random-kill test's kills and runs (default 1: 20 kills).
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.syncd.helpers import (
    all_synced,
    assert_exactly_once,
    local_runs,
    make_runs,
    wait_for,
)
from tests.syncd.proxy import ChaosProxy

SOAK = int(os.environ.get("RUNSTORE_SOAK", "1") or "1")


@pytest.fixture
def proxy(server):
    with ChaosProxy(server.port) as p:
        yield p


def _short_timeout(config_dir: Path, timeout_s: float = 1.0) -> None:
    (config_dir / "config.toml").write_text(f"[server]\ntimeout_s = {timeout_s}\n")


@pytest.mark.parametrize("point, pattern", [
    ("after the claim", b"POST /api/v1/runs/claim"),
    ("between chunks", b"PUT /api/v1/runs/"),
    ("after finalize, before the local mark", b"/finalize HTTP"),
])
def test_sigkill_at_each_dangerous_point_then_resume(server, token, proxy, daemons, home,
                                                     point, pattern) -> None:
    uuids = set(make_runs(home, 2, rows=45_000))  # more than one metric chunk each
    first = daemons(proxy.url, token, concurrency=1)
    # When the server has answered (it committed), the daemon dies before it sees the answer.
    proxy.on_response(pattern, lambda: first.proc.kill())
    first.start()
    wait_for(lambda: not first.alive(), 60, f"the kill {point}")
    assert proxy.triggered == ["on_response"]
    assert not all_synced(home, uuids)
    daemons(proxy.url, token).start()
    wait_for(lambda: all_synced(home, uuids), 60, "all synced after restart")
    assert_exactly_once(home, server.data_dir, uuids)


def test_twenty_sigkills_at_random_moments(server, token, daemons, home) -> None:
    rng = random.Random(int(os.environ.get("RUNSTORE_SEED", "0")) or None)
    uuids = set(make_runs(home, 24 * SOAK, rows=20_000))
    kills = 20 * SOAK
    unsynced_at_kill = []
    for _ in range(kills):
        d = daemons(server.url, token, concurrency=2)
        d.start(wait_ready=rng.random() < 0.8)  # some die while still starting up
        # A random moment within the next 0.4 s (waiting on the process, not a blind sleep).
        try:
            d.proc.wait(rng.uniform(0.0, 0.4))
        except subprocess.TimeoutExpired:
            pass
        assert d.alive(), d.log()
        d.kill()
        unsynced_at_kill.append(sum(r["state"] != "synced" for r in local_runs(home).values()))
    # The kills landed while there was work in flight, not after the batch was done.
    assert sum(n > 0 for n in unsynced_at_kill) >= kills // 2, unsynced_at_kill
    daemons(server.url, token).start()
    wait_for(lambda: all_synced(home, uuids), 120, "all synced after the kills")
    assert_exactly_once(home, server.data_dir, uuids)


@pytest.mark.parametrize("status, headers", [
    (500, ()), (503, ()), (429, (("Retry-After", "1"),)),
])
def test_server_errors_are_retried_to_exactly_one_copy(server, token, proxy, daemons, home,
                                                       status, headers) -> None:
    uuids = set(make_runs(home, 3, rows=100))
    # Enough failures to outlast the client's own per-request retries on several requests.
    proxy.answer(b"POST /api/v1/runs/claim", status, times=4, headers=headers)
    proxy.answer(b"/finalize HTTP", status, times=4, headers=headers)
    daemon = daemons(proxy.url, token, max_backoff_s=1).start()
    wait_for(lambda: all_synced(home, uuids), 60, f"all synced through {status}s")
    assert proxy.pending_rules() == 0
    assert_exactly_once(home, server.data_dir, uuids)
    assert daemon.log().count("unavailable") <= 2


def test_a_hung_server_times_out_and_is_retried(server, token, proxy, daemons, home,
                                                config_dir) -> None:
    _short_timeout(config_dir)
    uuids = set(make_runs(home, 2, rows=100))
    proxy.hang(b"PUT /api/v1/runs/", times=2)
    proxy.hang(b"/finalize HTTP", times=1)
    daemons(proxy.url, token, max_backoff_s=1).start()
    wait_for(lambda: all_synced(home, uuids), 60, "all synced past the hangs")
    assert proxy.pending_rules() == 0
    assert_exactly_once(home, server.data_dir, uuids)


def test_lost_acknowledgements_never_duplicate(server, token, proxy, daemons, home) -> None:
    uuids = set(make_runs(home, 3, rows=45_000))
    lost: list[int] = []
    for pattern in (b"POST /api/v1/runs/claim", b"PUT /api/v1/runs/", b"/finalize HTTP"):
        proxy.on_response(pattern, lambda: lost.append(1), times=2)
    daemons(proxy.url, token, max_backoff_s=1).start()
    wait_for(lambda: all_synced(home, uuids), 60, "all synced despite lost answers")
    assert len(lost) == 6
    assert_exactly_once(home, server.data_dir, uuids)
