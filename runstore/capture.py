"""What a run records about where it ran: platform, git state of the user's script, stdout."""

from __future__ import annotations

import importlib.metadata
import io
import os
import platform as _platform
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from runstore.store import process_start_id

# Imported module name -> (distribution name, framework label or None).
ML_PACKAGES: dict[str, tuple[str, str | None]] = {
    "torch": ("torch", "PyTorch"),
    "tensorflow": ("tensorflow", "TensorFlow"),
    "keras": ("keras", "Keras"),
    "jax": ("jax", "JAX"),
    "flax": ("flax", None),
    "paddle": ("paddlepaddle", "PaddlePaddle"),
    "mindspore": ("mindspore", "MindSpore"),
    "mxnet": ("mxnet", "MXNet"),
    "sklearn": ("scikit-learn", "scikit-learn"),
    "xgboost": ("xgboost", "XGBoost"),
    "lightgbm": ("lightgbm", "LightGBM"),
    "transformers": ("transformers", None),
    "lightning": ("lightning", None),
    "pytorch_lightning": ("pytorch-lightning", None),
    "deepspeed": ("deepspeed", None),
    "accelerate": ("accelerate", None),
    "torchvision": ("torchvision", None),
    "numpy": ("numpy", None),
    "pandas": ("pandas", None),
    "scipy": ("scipy", None),
}


def platform_info() -> dict[str, Any]:
    """{hostname, os, python, pypkgs, framework} with versions of already imported ML packages."""
    pypkgs: dict[str, str] = {}
    framework = None
    for module, (dist, label) in ML_PACKAGES.items():
        if module not in sys.modules:
            continue
        try:
            pypkgs[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = getattr(sys.modules[module], "__version__", None)
            if isinstance(version, str):
                pypkgs[dist] = version
        if framework is None and label is not None:
            framework = label
    return {
        "hostname": socket.gethostname(),
        "os": _platform.platform(),
        "python": _platform.python_version(),
        "pypkgs": pypkgs,
        "framework": framework,
    }


def entry_script() -> Path | None:
    """The user's entry script (__main__'s file), or None in an interactive session."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None
    return Path(path).resolve()


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
            check=False, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(script: Path | None = None) -> dict[str, Any]:
    """{repo_path, remote_url, branch, commit, is_dirty, entrypoint} of the user's script."""
    info: dict[str, Any] = dict.fromkeys(
        ("repo_path", "remote_url", "branch", "commit", "is_dirty", "entrypoint"))
    script = script if script is not None else entry_script()
    start = script.parent if script is not None else Path.cwd()
    root = _git(start, "rev-parse", "--show-toplevel")
    if root is None:
        return info
    repo = Path(root)
    info["repo_path"] = str(repo)
    info["remote_url"] = _git(repo, "config", "--get", "remote.origin.url")
    branch = _git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    info["branch"] = None if branch in (None, "HEAD") else branch
    info["commit"] = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    info["is_dirty"] = None if status is None else bool(status)
    if script is not None:
        try:
            info["entrypoint"] = script.relative_to(repo.resolve()).as_posix()
        except ValueError:
            info["entrypoint"] = str(script)
    return info


class StdoutTee(io.TextIOBase):
    """Writes go to the original stream and to the run's stdout.log while the run is live."""

    def __init__(self, original: TextIO, log_path: Path) -> None:
        self.original = original
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: TextIO | None = open(log_path, "a", buffering=1, encoding="utf-8",  # noqa: SIM115
                                        errors="backslashreplace")
        self._lock = threading.Lock()

    def write(self, text: str) -> int:  # type: ignore[override]
        n = self.original.write(text)
        log = self._log
        if log is not None:
            with self._lock:
                try:
                    log.write(text)
                except (OSError, ValueError):
                    pass  # a full disk must not break the user's print()
        return n

    def flush(self) -> None:
        self.original.flush()
        log = self._log
        if log is not None:
            with self._lock:
                try:
                    log.flush()
                except (OSError, ValueError):
                    pass

    def close_log(self) -> None:
        with self._lock:
            if self._log is not None:
                try:
                    self._log.close()
                except OSError:
                    pass
                self._log = None

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return self.original.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def start_tee(log_path: Path) -> StdoutTee | None:
    """Install a tee on sys.stdout; None if stdout is absent."""
    if sys.stdout is None:
        return None
    tee = StdoutTee(sys.stdout, log_path)
    sys.stdout = tee
    return tee


def stop_tee(tee: StdoutTee | None) -> None:
    """Remove the tee if it is still sys.stdout; in any case stop writing the log."""
    if tee is None:
        return
    try:
        tee.flush()
    except (OSError, ValueError):
        pass  # the original stream may be closed already (at interpreter exit)
    if sys.stdout is tee:
        sys.stdout = tee.original
    tee.close_log()


def pid_identity() -> tuple[int, str | None]:

    pid = os.getpid()
    return pid, process_start_id(pid)
