"""`syncd ...`: the command line. It parses arguments and turns errors into messages; the
daemon, its settings and its service file live in the other modules."""

from __future__ import annotations

import datetime as _dt
import faulthandler
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runstore import syncstate
from runstore.cli.base import user_errors
from runstore.rows import resolve_run
from runstore.store import Store
from syncd import daemon, drop, lock, logs, loop, service
from syncd.errors import SyncError
from syncd.settings import Settings, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runstore")
def main() -> None:
    """syncd: uploads finished runs from this node's runstore to the server.

    Settings come from ~/.config/runstore/config.toml, overridden by environment variables
    (RUNSTORE_HOME, RUNSTORE_SERVER, RUNSTORE_TOKEN, RUNSTORE_SYNCD_*), overridden by flags.
    See docs/SYNCD.md.
    """


def _settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--home", type=click.Path(file_okay=False, path_type=Path),
                     help="The store directory (default: RUNSTORE_HOME or the user data dir)."),
        click.option("--server", "host", help="Server URL (default: login / RUNSTORE_SERVER)."),
        click.option("--concurrency", type=click.IntRange(min=1),
                     help="Uploads at once (default 2)."),
        click.option("--only-auto-upload/--all-runs", "only_auto_upload", default=None,
                     help="Upload only runs created with auto_upload=True (default: all)."),
        click.option("--folder", help="Default server folder for runs that named none."),
        click.option("--make-folder/--no-make-folder", "make_folder", default=None,
                     help="Default for creating a missing folder."),
        click.option("--conflict-strategy",
                     type=click.Choice(["skip", "error", "new", "replace"]),
                     help="Default conflict strategy for runs that named none."),
        click.option("--max-backoff", "max_backoff_s", type=click.FloatRange(min=0.1),
                     help="Cap of a run's retry backoff, seconds (default 300)."),
        click.option("--fallback-interval", "fallback_interval_s",
                     type=click.FloatRange(min=0.1),
                     help="Slow tick for missed file events, seconds (default 30)."),
        click.option("--live-interval", "live_interval_s", type=click.FloatRange(min=0),
                     help="Push rows of live auto_upload runs this often, 0 = never (30)."),
        click.option("--log-level",
                     type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                       case_sensitive=False)),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load(flags: dict[str, Any]) -> Settings:
    try:
        return load_settings(flags)
    except SyncError as exc:
        raise click.ClickException(str(exc)) from exc


# Library errors (SyncError is a RunstoreError) become one-line `Error: ...`, exit code 1.
_errors = user_errors


@main.command("run")
@_settings_options
@click.option("--to-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Drop mode: write bundles of finished runs here; upload nothing.")
@click.option("--from-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Drop mode: import bundles that appear here and upload their runs.")
@_errors
def run_cmd(to_dir: Path | None, from_dir: Path | None, **flags: Any) -> None:
    """Run the daemon in the foreground (what the service manager runs)."""
    settings = _load(flags)
    logs.setup(settings.log_level)
    export_dir = drop.drop_dir(settings, to_dir)
    if export_dir is not None or from_dir is not None:
        sys.exit(_run_drop(settings, export_dir, from_dir))
    daemon.check_logged_in(settings)
    # `kill -USR1 <pid>` prints every thread's stack to the journal: a hung upload is visible.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with lock.acquire(settings.home):
        code = loop.run_forever(settings)
    sys.exit(code)


def _run_drop(settings: Settings, to_dir: Path | None, from_dir: Path | None) -> int:
    """`syncd run --to-dir` / `--from-dir` (docs/AIRGAP.md)."""
    if to_dir is not None and from_dir is not None:
        raise click.UsageError("give --to-dir or --from-dir, not both (a node either writes "
                               "bundles or imports them)")
    if to_dir is not None:
        with lock.acquire(settings.home):
            return drop.run_drop(settings, to_dir=to_dir)
    daemon.check_logged_in(settings)
    staging = settings.home / drop.STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    with lock.acquire(staging):
        return drop.run_drop(settings, from_dir=from_dir, client_factory=lambda: (
            daemon.default_client_factory(settings, time.sleep)))


@main.command("once")
@_settings_options
@_errors
def once_cmd(**flags: Any) -> None:
    """Upload everything due now, then exit (non-zero if anything failed)."""

    settings = _load(flags)
    logs.setup(settings.log_level)
    export_dir = drop.drop_dir(settings, None)
    if export_dir is not None:  # drop mode: one bundle of what changed, if anything did
        with lock.acquire(settings.home):
            written = drop.export_once(settings.home, export_dir)
        click.echo(f"bundle written: {written}" if written else
                   "nothing new since the last export; no bundle written")
        return
    daemon.check_logged_in(settings)
    with lock.acquire(settings.home):
        store = Store(settings.home)
        syncer = daemon.Syncer(store, settings)
        try:
            result = syncer.sync_once(wait=True)
        finally:
            syncer.shutdown()
            store.close()
    click.echo(f"synced {len(result.synced)}, failed {len(result.failed)}, "
               f"retrying {len(result.retrying)}")
    for uuid, message in result.failed:
        click.echo(f"failed {uuid}: {message}")
    for uuid, message in result.retrying:
        click.echo(f"retrying {uuid}: {message}")
    if not result.ok:
        sys.exit(1)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def status_report(settings: Settings, include_synced: bool = False) -> dict[str, Any]:
    """What `syncd status` shows: the daemon, the queue figures and the runs needing care."""

    store = Store(settings.home)
    try:
        counts = syncstate.counts(store)
        states = syncstate.STATES if include_synced else ("pending", "uploading", "failed")
        runs = []
        for e in syncstate.entries(store, states):
            runs.append({
                "uuid": e.run_uuid, "name": e.name, "alternative_name": e.alternative_name,
                "status": e.status, "state": e.state, "attempts": e.attempts,
                "last_error": e.last_error, "next_attempt_at": _iso(e.next_attempt_at),
                "remote_path": e.remote_path,
            })
    finally:
        store.close()
    pid = lock.running_pid(settings.home)
    report = {"store": str(settings.home), "server": settings.host,
              "daemon": {"running": pid is not None, "pid": pid},
              "counts": counts, "runs": runs}
    bundles = drop.bundle_status(settings.home)
    if any(bundles.values()):
        report["bundles"] = bundles
    return report


def _render_status(report: dict[str, Any], now: float) -> str:
    c = report["counts"]
    daemon_text = (f"running (pid {report['daemon']['pid']})" if report["daemon"]["running"]
                   else "not running")
    lines = [f"store:   {report['store']}", f"server:  {report['server'] or '(not configured)'}",
             f"daemon:  {daemon_text}",
             f"pending {c['pending']}  uploading {c['uploading']}  synced {c['synced']}  "
             f"failed {c['failed']}  (running {c['running']})"]
    for state in ("failed", "uploading", "pending", "synced"):
        runs = [r for r in report["runs"] if r["state"] == state]
        if not runs:
            continue
        lines.append("")
        lines.append(f"{state}:")
        for r in runs:
            parts = [f"  {r['alternative_name']}", f"attempts {r['attempts']}"]
            if r["next_attempt_at"] and state == "pending":
                when = _dt.datetime.fromisoformat(r["next_attempt_at"]).timestamp()
                wait = max(0, round(when - now))
                parts.append(f"next retry {r['next_attempt_at']} (in {wait}s)")
            if r["remote_path"]:
                parts.append(r["remote_path"])
            if r["last_error"]:
                parts.append(f"error: {r['last_error']}")
            lines.append("  ".join(parts))
    if c["failed"]:
        lines += ["", "Try: fix the cause, then `syncd retry RUN` or `syncd retry --all-failed`."]
    lines += drop.render_bundle_status(report.get("bundles"))
    return "\n".join(lines)


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "include_synced", is_flag=True, help="List synced runs too.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path))
@_errors
def status_cmd(as_json: bool, include_synced: bool, home: Path | None) -> None:
    """Show pending / uploading / synced / failed runs, with reasons and next retry times."""
    settings = _load({"home": home})
    report = status_report(settings, include_synced)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(_render_status(report, time.time()))


@main.command("retry")
@click.argument("run", required=False)
@click.option("--all-failed", is_flag=True, help="Requeue every failed run.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path))
@_errors
def retry_cmd(run: str | None, all_failed: bool, home: Path | None) -> None:
    """Put a failed run (UUID, alternative name, directory or unique name: the rule of
    runstore.rows.resolve_run) or all failed runs back in the queue."""

    if bool(run) == all_failed:
        raise click.UsageError("give either RUN or --all-failed")
    settings = _load({"home": home})
    store = Store(settings.home)
    try:
        uuid = None if run is None else resolve_run(store, run)["uuid"]
        n = syncstate.requeue(store, uuid, all_failed=all_failed)
    finally:
        store.close()
    if n == 0 and run:
        raise click.ClickException(
            f"no unsynced run {run!r} in the store {str(settings.home)!r}. "
            "Try: `syncd status` to list them.")
    click.echo(f"requeued {n} run(s)")


@main.command("install-service")
@click.option("--user", "user_mode", is_flag=True,
              help="A per-user unit (~/.config/systemd/user) instead of a system one.")
@click.option("--path", "unit_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the unit here instead of the systemd directory.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit, write nothing.")
@click.option("--run-as", help="System units: the account to run as (default: you).")
@_errors
def install_service_cmd(user_mode: bool, unit_path: Path | None, print_only: bool,
                        run_as: str | None) -> None:
    """Write a systemd unit that runs `syncd run`, and print how to enable it."""
    if not user_mode and run_as is None:
        run_as = os.environ.get("SUDO_USER") or _current_user()
    spec = service.UnitSpec(user_mode=user_mode, exec_start=service.exec_start(),
                            environment=service.unit_environment(), run_as=run_as)
    text = service.render_unit(spec)
    if print_only:
        click.echo(text, nl=False)
        return
    path = unit_path or ((service.user_unit_dir() if user_mode else service.SYSTEM_UNIT_DIR)
                         / service.UNIT_NAME)
    service.write_unit(path, text)
    click.echo(service.enable_hint(path, user_mode))


def _current_user() -> str | None:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


if __name__ == "__main__":  # python -m syncd.cli
    main()
