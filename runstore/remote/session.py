"""t9k's module-level functions: login, logout, upload(path, ...)."""

from __future__ import annotations

import os
from pathlib import Path

from runstore.config import delete_credentials, load_config, save_credentials
from runstore.errors import NotFoundError
from runstore.remote.client import Client
from runstore.remote.upload import Progress, UploadResult, upload_artifact, upload_run
from runstore.rules import check_conflict_strategy, check_folder
from runstore.store import Store


def login(ais_host: str | None = None, api_key: str | None = None,
          timeout: float | None = None) -> None:
    """Check the host and token against the server, then store them (0600) for later."""
    config = load_config()
    host = ais_host or config.host
    token = api_key or config.token
    if not host or not token:
        raise ValueError("login needs ais_host and api_key (the server URL and a token from "
                         "`runstore user add`)")
    with Client(host, token, timeout_s=timeout or config.timeout_s, max_attempts=2) as client:
        client.request("GET", "/whoami")
        host = client.host
    save_credentials(host, token)


def logout() -> None:
    """Forget the stored credentials (environment variables still apply)."""
    delete_credentials()


def resolve_targets(store: Store, path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """('Run'|'Artifact', uuid) for a run/artifact dir, a parent of several, or a name."""
    text = os.fspath(path)
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        found = _by_dir(store, candidate.resolve())
        if found:
            return [found]
        children = sorted(p for p in candidate.iterdir() if p.is_dir())
        targets = [t for t in (_by_dir(store, c.resolve()) for c in children) if t]
        if targets:
            return targets
        raise NotFoundError(f"{text!r} holds no run or artifact of the local store "
                            f"{store.home}")
    rows = store.read("SELECT uuid FROM runs WHERE alternative_name = ? OR uuid = ?",
                      (text, text))
    if rows:
        return [("Run", rows[0]["uuid"])]
    rows = store.read("SELECT uuid FROM artifacts WHERE alternative_name = ? OR uuid = ?",
                      (text, text))
    if rows:
        return [("Artifact", rows[0]["uuid"])]
    runs = store.read("SELECT uuid, alternative_name FROM runs WHERE name = ? ORDER BY id",
                      (text,))
    arts = store.read("SELECT uuid, alternative_name FROM artifacts WHERE name = ? ORDER BY id",
                      (text,))
    if len(runs) + len(arts) == 1:
        return [("Run", runs[0]["uuid"])] if runs else [("Artifact", arts[0]["uuid"])]
    if runs or arts:
        names = ", ".join(r["alternative_name"] for r in [*runs, *arts][:5])
        raise ValueError(f"{text!r} names several runs/artifacts ({names}); give the "
                         "alternative name")
    raise NotFoundError(f"no run or artifact {text!r} in the local store {store.home}")


def _by_dir(store: Store, directory: Path) -> tuple[str, str] | None:
    for kind, table in (("Run", "runs"), ("Artifact", "artifacts")):
        rows = store.read(f"SELECT uuid, local_dir FROM {table} WHERE local_dir = ? OR "
                          "alternative_name = ?", (str(directory), directory.name))
        for r in rows:
            if Path(r["local_dir"]).resolve() == directory:
                return kind, r["uuid"]
    return None


def upload(path: str | os.PathLike[str], folder: str = "default", make_folder: bool = False,
           conflict_strategy: str = "new", *, store: Store | None = None,
           client: Client | None = None, progress: Progress | None = None
           ) -> list[UploadResult]:
    """t9k's upload(path, ...): one run/artifact, a parent dir of several, or a name."""
    check_conflict_strategy(conflict_strategy)
    check_folder(folder)
    own_client = client is None
    client = client or Client.from_config()
    store = store or Store()
    try:
        results = []
        for kind, uuid in resolve_targets(store, path):
            if kind == "Run":
                results.append(upload_run(store, uuid, client, folder=folder,
                                          make_folder=make_folder,
                                          conflict_strategy=conflict_strategy,
                                          progress=progress))
            else:
                results.append(upload_artifact(store, uuid, client, folder=folder,
                                               make_folder=make_folder,
                                               conflict_strategy=conflict_strategy,
                                               progress=progress))
        return results
    finally:
        if own_client:
            client.close()
