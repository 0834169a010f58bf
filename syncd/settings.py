"""The daemon's effective settings: config.toml < environment < command-line flags.

``~/.config/runstore/config.toml`` (or ``$RUNSTORE_CONFIG_DIR/config.toml``)::

    [server]
    host = "https://runs.example.org"   # or credentials.toml from `runstore login`
    timeout_s = 30

    [upload]                       # the target of runs whose create_run() kept the defaults
    folder = "default"
    make_folder = false
    conflict_strategy = "new"

    [syncd]
    concurrency = 2                # uploads at once
    only_auto_upload = false       # true: only runs created with auto_upload=True
    live_interval_s = 30           # auto_upload runs: push rows while live (0 = off)
    fallback_interval_s = 30       # slow tick for missed file events
    max_backoff_s = 300            # cap of a run's retry backoff
    log_level = "INFO"
    target = "dir:/mnt/transfer"   # drop mode: write bundles there, upload nothing (AIRGAP.md)
    bundle_interval_s = 600        # drop mode: a bundle of live runs' new rows this often

Environment: RUNSTORE_HOME, RUNSTORE_SERVER, RUNSTORE_TOKEN (via runstore.config), and
RUNSTORE_SYNCD_<KEY> for each key of [syncd] (e.g. RUNSTORE_SYNCD_CONCURRENCY=4).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from runstore.config import ConfigError, config_dir, load_config
from runstore.errors import InvalidInputError
from runstore.rules import check_conflict_strategy, check_folder
from runstore.store import default_home
from syncd.errors import SettingsError

ENV_PREFIX = "RUNSTORE_SYNCD_"


@dataclass(frozen=True)
class Settings:
    """Everything the daemon needs to know, resolved from all sources."""

    home: Path
    host: str | None = None
    token: str | None = None
    timeout_s: float = 30.0
    folder: str = "default"
    make_folder: bool = False
    conflict_strategy: str = "new"
    concurrency: int = 2
    only_auto_upload: bool = False
    live_interval_s: float = 30.0
    fallback_interval_s: float = 30.0
    max_backoff_s: float = 300.0
    log_level: str = "INFO"
    target: str | None = None          # "dir:PATH": drop mode (docs/AIRGAP.md)
    bundle_interval_s: float = 600.0

    def public(self) -> dict[str, Any]:
        """The settings without the token (for logs and `syncd status --json`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["home"] = str(self.home)
        out["token"] = "***" if self.token else None
        return out


# [syncd] keys: parsed here only (file and environment by the same _parse, then _check).
_SYNCD_KEYS: dict[str, type] = {
    "concurrency": int, "only_auto_upload": bool, "live_interval_s": float,
    "fallback_interval_s": float, "max_backoff_s": float, "log_level": str,
    "target": str, "bundle_interval_s": float,
}


def _parse(key: str, kind: type, value: Any, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        if kind is str:
            return str(value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: {key} = {value!r} is not valid ({exc})") from None


def _check(s: Settings) -> Settings:
    if s.concurrency < 1:
        raise SettingsError(f"concurrency {s.concurrency} must be >= 1")
    if s.fallback_interval_s <= 0 or s.max_backoff_s <= 0 or s.live_interval_s < 0:
        raise SettingsError("fallback_interval_s and max_backoff_s must be > 0, "
                            "live_interval_s >= 0")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"log_level {s.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
    if s.target is not None and not (s.target.startswith("dir:") and len(s.target) > 4):
        raise SettingsError(f"target {s.target!r} is not a drop directory. Try: target = "
                            '"dir:/mnt/transfer" (or leave it out to upload to the server)')
    if s.bundle_interval_s <= 0:
        raise SettingsError(f"bundle_interval_s {s.bundle_interval_s} must be > 0")
    try:
        check_conflict_strategy(s.conflict_strategy)
        check_folder(s.folder)
    except InvalidInputError as exc:
        raise SettingsError(str(exc)) from None
    return s


def load_settings(flags: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None,
                  directory: Path | None = None) -> Settings:
    """Resolve settings: config.toml, then environment variables, then non-None ``flags``."""
    env = os.environ if environ is None else environ
    directory = directory or config_dir()
    path = directory / "config.toml"
    try:
        with path.open("rb") as fh:
            table = tomllib.load(fh).get("syncd", {})
    except FileNotFoundError:
        table = {}
    except tomllib.TOMLDecodeError as exc:  # load_config would have raised already
        raise SettingsError(f"{path}: not valid TOML ({exc})") from exc
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: [syncd] must be a table")
    unknown = sorted(set(table) - set(_SYNCD_KEYS))
    if unknown:
        raise SettingsError(f"{path}: unknown [syncd] keys {unknown}; "
                            f"known: {', '.join(_SYNCD_KEYS)}")
    syncd_values = {key: _parse(key, kind, table[key], str(path))
                    for key, kind in _SYNCD_KEYS.items() if key in table}  # names the bad key
    try:
        cfg = load_config(directory)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
    home = Path(env["RUNSTORE_HOME"]).expanduser() if env.get("RUNSTORE_HOME") \
        else default_home()
    values: dict[str, Any] = {
        "home": home, "host": cfg.host, "token": cfg.token, "timeout_s": cfg.timeout_s,
        "folder": cfg.folder, "make_folder": cfg.make_folder,
        "conflict_strategy": cfg.conflict_strategy,
    }
    values.update(syncd_values)
    for key, kind in _SYNCD_KEYS.items():
        name = ENV_PREFIX + key.upper()
        if env.get(name):
            values[key] = _parse(key, kind, env[name], f"environment {name}")
    settings = Settings(**values)
    overrides = {k: v for k, v in (flags or {}).items() if v is not None}
    if "home" in overrides:
        overrides["home"] = Path(overrides["home"]).expanduser()
    return _check(replace(settings, **overrides))
