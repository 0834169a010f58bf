"""Configuration: ~/.config/runstore/config.toml, overridden by environment variables.

``config.toml``::

    [server]
    host = "http://127.0.0.1:8750"
    timeout_s = 30

    [upload]
    folder = "default"
    make_folder = false
    conflict_strategy = "new"

    [syncd]
    concurrency = 2
    only_auto_upload = false

Credentials (host + token) live in ``credentials.toml`` beside it, mode 0600, written by
``runstore login`` / ``runstore.login()``. Environment overrides: RUNSTORE_CONFIG_DIR (the
directory of both files), RUNSTORE_SERVER, RUNSTORE_TOKEN, RUNSTORE_HOME (the store).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from runstore.errors import InvalidInputError, RunstoreError
from runstore.rules import CONFLICT_STRATEGIES as CONFLICT_STRATEGIES
from runstore.rules import check_conflict_strategy as check_conflict_strategy
from runstore.rules import check_folder


class ConfigError(RunstoreError):
    """The configuration file or an override holds a bad value."""


def config_dir() -> Path:
    env = os.environ.get("RUNSTORE_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("runstore", appauthor=False))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}). Try: fix or delete the file.") from exc




@dataclass
class Credentials:
    host: str
    token: str


@dataclass
class Config:
    """Effective configuration (file < environment < explicit arguments)."""

    host: str | None = None
    token: str | None = None
    timeout_s: float = 30.0
    folder: str = "default"
    make_folder: bool = False
    conflict_strategy: str = "new"

    @property
    def credentials(self) -> Credentials | None:
        if self.host and self.token:
            return Credentials(self.host, self.token)
        return None


def load_config(directory: Path | None = None) -> Config:
    """Read config.toml and credentials.toml from ``directory``, then apply env overrides."""
    directory = directory or config_dir()
    data = _read_toml(directory / "config.toml")
    creds = _read_toml(directory / "credentials.toml")
    cfg = Config()
    server = data.get("server", {})
    upload = data.get("upload", {})
    cfg.host = creds.get("host") or server.get("host")
    cfg.token = creds.get("token")
    where = directory / "config.toml"
    cfg.timeout_s = _typed(where, "server.timeout_s", server.get("timeout_s", cfg.timeout_s),
                           float)
    cfg.folder = _typed(where, "upload.folder", upload.get("folder", cfg.folder), str)
    cfg.make_folder = _typed(where, "upload.make_folder",
                             upload.get("make_folder", cfg.make_folder), bool)
    cfg.conflict_strategy = _typed(where, "upload.conflict_strategy",
                                   upload.get("conflict_strategy", cfg.conflict_strategy), str)
    try:
        check_conflict_strategy(cfg.conflict_strategy)
    except InvalidInputError as exc:
        raise ConfigError(f"{where}: upload.{exc}") from None
    try:
        check_folder(cfg.folder)
    except InvalidInputError as exc:
        raise ConfigError(f"{where}: upload.folder: {exc}") from None
    # [syncd] is the daemon's: syncd/settings.py parses it (one set of rules, in one place).
    if os.environ.get("RUNSTORE_SERVER"):
        cfg.host = os.environ["RUNSTORE_SERVER"]
    if os.environ.get("RUNSTORE_TOKEN"):
        cfg.token = os.environ["RUNSTORE_TOKEN"]
    return cfg


def _typed(where: Path, key: str, value: Any, kind: type) -> Any:
    """value as kind, else a ConfigError naming the file, the key and the value."""
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{where}: {key} = {value!r} is not of type {kind.__name__}; "
                          "fix or remove it")
    return value


def save_credentials(host: str, token: str, directory: Path | None = None) -> Path:
    """Write credentials.toml with mode 0600 (created 0600, never world-readable)."""
    directory = directory or config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "credentials.toml"
    tmp = path.with_name(".credentials.toml.tmp")
    body = f"host = {_toml_str(host)}\ntoken = {_toml_str(token)}\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def delete_credentials(directory: Path | None = None) -> bool:
    path = (directory or config_dir()) / "credentials.toml"
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 32 for c in escaped):
        raise ConfigError(f"control characters are not allowed in {value!r}")
    return f'"{escaped}"'
