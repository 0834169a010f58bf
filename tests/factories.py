"""Helpers many test folders need: waiting for a condition with a deadline, the environment of
a node (RUNSTORE_HOME, config, server, token) and the `syncd` CLI as a real subprocess.

One place for them so a change (a longer timeout under CI, another variable every child
needs) is made once. The `runstore` CLI runner stays in tests/server_harness.py (`run_cli`),
beside the server it usually talks to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; fail naming
    ``what`` after ``timeout_s`` (a deadline, never a fixed sleep that hopes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def node_env(home: Path, *, config_dir: Path | None = None, server_url: str | None = None,
             token: str | None = None, inherit: bool = True) -> dict[str, str]:
    """The environment of a child process acting as a node on store ``home``: this process's
    environment (unless ``inherit`` is False), this checkout first on PYTHONPATH, and the
    runstore variables given."""
    env = dict(os.environ) if inherit else {}
    inherited = env.get("PYTHONPATH")
    env.update({"RUNSTORE_HOME": str(home),
                "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO_ROOT), inherited)))})
    if config_dir is not None:
        env["RUNSTORE_CONFIG_DIR"] = str(config_dir)
    if server_url is not None:
        env["RUNSTORE_SERVER"] = server_url
    if token is not None:
        env["RUNSTORE_TOKEN"] = token
    return env


def syncd_cli(*args: str, env: Mapping[str, str],
              timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """`python -m syncd.cli ARGS...` from the checkout, with exactly ``env`` (some tests pass a
    bare one on purpose); the completed process in text mode."""
    return subprocess.run([sys.executable, "-m", "syncd.cli", *args], env=dict(env),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
