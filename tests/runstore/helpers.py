"""Small helpers for tests that run real Python processes against a store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.factories import node_env


def run_script(code: str, home: Path, *, cwd: Path | None = None, check: bool = True,
               timeout: float = 120, env: dict[str, str] | None = None,
               script_path: Path | None = None) -> subprocess.CompletedProcess:
    """Run `code` as a script file in a fresh interpreter with RUNSTORE_HOME=home."""
    script = script_path or (home.parent / f"script_{os.getpid()}_{abs(hash(code))}.py")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(textwrap.dedent(code))
    full_env = {**node_env(home), **(env or {})}
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd or script.parent,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
