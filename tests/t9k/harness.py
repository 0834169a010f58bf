"""The REAL t9k 0.6.0b0 client in a throwaway venv, driven in subprocesses.

    python = t9k_python()               # <venv>/bin/python with t9k installed (built once)
    done = run_t9k(python, SCRIPT, cwd, host=..., key=...)   # a CompletedProcess

The venv is built once per machine and reused (under the temp directory, named by a hash of
the sdist, the dependency list and the Python version), under a file lock so that concurrent
test processes build it once. The sdist is installed unmodified, without the dependencies that
only other t9k modules import (see tests/vendor/README.md).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SDIST = Path(__file__).resolve().parent.parent / "vendor" / "t9k-0.6.0b0.tar.gz"
DEPS = ["requests", "simplejson", "rich", "PyYAML", "watchdog", "click", "tabulate",
        "jsonstream", "GitPython"]
AISTORE_PREFIX = "/t9k/aistore/server"


@functools.cache
def t9k_python() -> Path:
    """The python of a venv with the t9k client; built on first use."""
    tag = hashlib.sha256(SDIST.read_bytes() + repr((DEPS, sys.version)).encode()).hexdigest()
    root = Path(tempfile.gettempdir()) / f"runstore-t9k-venv-{tag[:16]}"
    python = root / "bin" / "python"
    lock_path = Path(tempfile.gettempdir()) / f"runstore-t9k-venv-{tag[:16]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "ready").exists():
            return python
        # A venv's scripts hold its absolute path, so it is built in place; "ready" marks a
        # finished build (a half-built one, from a killed run, is started again).
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        for args in (["--no-deps", str(SDIST)], DEPS):
            done = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"installing {args} into the t9k venv failed:\n"
                                   f"{done.stdout}\n{done.stderr}")
        (root / "ready").write_text("ok\n")
    return python


def run_t9k(python: Path, script: str, cwd: Path, *, host: str, key: str,
            args: tuple[str, ...] = (), timeout_s: float = 180.0) -> subprocess.CompletedProcess:
    """Run a script with the t9k client in cwd; HOST (the aistore URL) and KEY in its env."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTORE", "T9K"))}
    env.update(HOST=host + AISTORE_PREFIX, KEY=key, PYTHONUNBUFFERED="1",
               T9K_CONFIG=str(cwd / "no-t9k-config.yaml"))
    return subprocess.run([str(python), "-c", textwrap.dedent(script), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout_s)


def em_cli(python: Path, args: list[str], cwd: Path, config: Path,
           timeout_s: float = 180.0) -> subprocess.CompletedProcess:
    """The `em` command of the venv, with a t9k-config.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTORE", "T9K"))}
    env.update(T9K_CONFIG=str(config), PYTHONUNBUFFERED="1")
    return subprocess.run([str(python.parent / "em"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def t9k_config(path: Path, server_url: str, key: str) -> Path:
    """The t9k-config.yaml docs/T9K.md tells t9k users to write."""
    path.write_text(textwrap.dedent(f"""\
        current-context: runstore
        contexts:
        - name: runstore
          server: {server_url}
          prefixes:
            aistore: /t9k/aistore/server
            asset-hub: /t9k/asset-hub/server
          auth:
            apikey: {key}
        """))
    return path
