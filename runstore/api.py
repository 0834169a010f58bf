"""The t9k.em module-level functions: create_run, load_run, create_artifact, ..."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from runstore.artifact import Artifact, find_artifact_row
from runstore.errors import AmbiguousError, InvalidTypeError, InvalidValueError, NotFoundError

# Process state lives in lifecycle.py; these names stay importable from here.
from runstore.lifecycle import all_writers as all_writers
from runstore.lifecycle import default_store as default_store
from runstore.lifecycle import writer_for as writer_for
from runstore.rules import check_conflict_strategy, check_folder
from runstore.run import Run, find_run_row
from runstore.store import Store
from runstore.store import default_home as default_home

CONFIG_KEYS = ("name", "hparams", "labels", "description", "auto_upload", "folder",
               "make_folder", "conflict_strategy")

def _read_run_config(config_path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(config_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config_path {str(config_path)!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise InvalidValueError(f"config_path {str(config_path)!r} is not valid YAML: "
                                f"{exc}") from exc
    if not isinstance(data, dict):
        raise InvalidValueError(f"config_path {str(config_path)!r} must hold a mapping of "
                         f"{', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise InvalidValueError(f"config_path {str(config_path)!r} has unknown keys {unknown}; "
                         f"allowed: {', '.join(CONFIG_KEYS)}")
    return data


def create_run(config_path: str | os.PathLike[str] | None = None, name: str = "default",
               hparams: dict[str, Any] | None = None, labels: list[str] | None = None,
               description: str = "", auto_upload: bool = False, folder: str = "default",
               make_folder: bool = False, conflict_strategy: str = "new") -> Run:
    """Create and start a Run in the local store (the YAML file's values override arguments)."""
    args: dict[str, Any] = {
        "name": name, "hparams": hparams, "labels": labels, "description": description,
        "auto_upload": auto_upload, "folder": folder, "make_folder": make_folder,
        "conflict_strategy": conflict_strategy,
    }
    if config_path is not None:
        args.update(_read_run_config(config_path))
    check_conflict_strategy(args["conflict_strategy"])
    check_folder(args["folder"])
    hp = args["hparams"] or {}
    if not isinstance(hp, dict):
        raise InvalidTypeError(f"hparams must be a dict, not {type(hp).__name__}")
    metadata = {
        "name": args["name"], "labels": args["labels"], "description": args["description"],
        "_target": {"folder": args["folder"], "make_folder": args["make_folder"],
                    "conflict_strategy": args["conflict_strategy"],
                    "auto_upload": args["auto_upload"]},
    }
    run = Run(metadata, hparams=hp)
    run._start_tee()
    return run


def load_run(path: str | os.PathLike[str], auto_upload: bool = False, folder: str = "default",
             make_folder: bool = False, conflict_strategy: str = "new") -> Run:
    """Load a run (local dir, name, alternative name or UUID; else from the server) to go on.

    The run is set back to Running with its end timestamp cleared.
    """
    check_conflict_strategy(conflict_strategy)
    check_folder(folder)
    store = default_store()
    row = _local_or_downloaded(store, str(path), "runs")
    with store.write() as conn:
        conn.execute("UPDATE runs SET folder = ?, make_folder = ?, conflict_strategy = ?, "
                     "auto_upload = ? WHERE id = ?",
                     (folder, int(make_folder), conflict_strategy, int(auto_upload), row["id"]))
    live = writer_for(store).live_run(row["id"])
    if isinstance(live, Run) and live._owner_pid == os.getpid():
        return live  # already open in this process: the same object, one buffer
    row = find_run_row(store, row["uuid"])
    run = Run._from_store(store, row)
    if run.status != "Running" or row["pid"] is None:
        # Ended, or a copy downloaded while it ran elsewhere (no process of this store's):
        # this process goes on with it, as a job requeued on another node does.
        run._reopen()
    run._start_tee()
    return run


def _local_or_downloaded(store: Store, ref: str, table: str) -> Any:
    """The row of a run/artifact found locally (runstore.rows' one resolver rule), else
    downloaded from the server (t9k order: local first; a remote path holds a '/')."""
    finder = find_run_row if table == "runs" else find_artifact_row
    row = _find_local(store, ref, finder)
    if row is not None:
        return row
    from runstore import remote

    download = remote.download_run if table == "runs" else remote.download_artifact
    with remote.Client.from_config() as client:
        return finder(store, download(store, ref, client))


def _find_local(store: Store, ref: str, finder: Any) -> Any:
    try:
        return finder(store, ref)
    except AmbiguousError:
        raise
    except NotFoundError:
        candidate = Path(ref).expanduser()
        if candidate.is_dir() and candidate.name != ref:
            # a run directory copied elsewhere: it is named by the run's alternative name
            return _find_local(store, candidate.name, finder)
        if "/" in ref:
            return None  # a remote path: the caller asks the server
        raise


def create_artifact(name: str, labels: list[str] | None = None,
                    description: str = "") -> Artifact:
    """Create an Artifact in the local store."""
    return Artifact({"name": name, "labels": labels, "description": description})


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Load an artifact (local dir, name, alternative name or UUID; else from the server)."""
    store = default_store()
    return Artifact({}, store=store, _row=_local_or_downloaded(store, str(path), "artifacts"))


def upload(path: str, folder: str = "default", make_folder: bool = False,
           conflict_strategy: str = "new") -> None:
    """Upload a run or artifact (or a directory holding several) to the server."""
    from runstore import remote

    check_folder(folder)
    check_conflict_strategy(conflict_strategy)
    remote.upload(path, folder=folder, make_folder=make_folder,
                  conflict_strategy=conflict_strategy)


def login(ais_host: str | None = None, api_key: str | None = None,
          timeout: float | None = None) -> None:
    """Store server credentials (t9k's signature)."""
    from runstore import remote

    remote.login(ais_host=ais_host, api_key=api_key, timeout=timeout)


def logout() -> None:
    """Forget the stored server credentials."""
    from runstore import remote

    remote.logout()
