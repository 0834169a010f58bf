"""A systemd unit for `syncd run`, with the ExecStart of this very install."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from syncd.errors import ServiceError

UNIT_NAME = "runstore-syncd.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def user_unit_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def exec_start() -> list[str]:
    """The command that runs this install's daemon: the `syncd` script beside this Python."""
    script = Path(sys.executable).with_name("syncd")
    if script.exists():
        return [str(script.absolute()), "run"]
    found = shutil.which("syncd")
    if found:
        return [str(Path(found).absolute()), "run"]
    return [str(Path(sys.executable).absolute()), "-m", "syncd.cli", "run"]


@dataclass(frozen=True)
class UnitSpec:
    user_mode: bool
    exec_start: list[str]
    environment: dict[str, str]
    run_as: str | None = None  # system units: the account whose store and credentials it uses


def render_unit(spec: UnitSpec) -> str:
    """The unit file text (Type=notify: READY after the first pass, WATCHDOG pings)."""
    lines = [
        "[Unit]",
        "Description=runstore sync daemon: uploads finished runs to the runstore server",
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(_systemd_quote(a) for a in spec.exec_start),
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=10",
        "WatchdogSec=60",
        "KillSignal=SIGTERM",
    ]
    if spec.run_as and not spec.user_mode:
        lines.append(f"User={spec.run_as}")
    for key, value in sorted(spec.environment.items()):
        lines.append("Environment=" + _systemd_quote(f"{key}={value}"))
    lines += ["", "[Install]", "WantedBy=" + ("default.target" if spec.user_mode
                                              else "multi-user.target"), ""]
    return "\n".join(lines)


def _systemd_quote(arg: str) -> str:
    if arg and not any(c in arg for c in " \t\"'\\$%;"):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") \
        .replace("%", "%%")
    return f'"{escaped}"'


def unit_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The settings from the environment that the service must see too (never the token)."""
    env = os.environ if environ is None else environ
    keep = ("RUNSTORE_HOME", "RUNSTORE_CONFIG_DIR", "RUNSTORE_SERVER")
    out = {k: env[k] for k in keep if env.get(k)}
    out.update({k: v for k, v in env.items() if k.startswith("RUNSTORE_SYNCD_") and v})
    return out


def write_unit(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (tmp file, fsync, rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except PermissionError as exc:
        raise ServiceError(
            f"cannot write {str(path)!r}: permission denied. Try: sudo syncd install-service, "
            "or `syncd install-service --user` for a per-user service.") from exc
    except OSError as exc:
        raise ServiceError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    return path


def enable_hint(path: Path, user_mode: bool) -> str:
    """What to run next, for the admin."""
    ctl = "systemctl --user" if user_mode else "sudo systemctl"
    journal = "journalctl --user -u" if user_mode else "journalctl -u"
    lines = [f"Wrote {path}", "Enable and start it with:",
             f"  {ctl} daemon-reload", f"  {ctl} enable --now {UNIT_NAME}",
             "Then check it with:", f"  {ctl} status {UNIT_NAME}",
             f"  {journal} {UNIT_NAME} -f", "  syncd status"]
    if user_mode:
        lines.append("To keep it running while you are logged out: "
                     "sudo loginctl enable-linger $USER")
    return "\n".join(lines)
