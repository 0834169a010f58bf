"""t9k's module-level functions: login, logout, upload(path, ...)."""

from __future__ import annotations

import os
from pathlib import Path

from runstore.config import delete_credentials, load_config, save_credentials
from runstore.errors import AmbiguousError, InvalidValueError, NotFoundError
from runstore.remote.client import Client
from runstore.remote.upload import Progress, UploadResult, upload_artifact, upload_run
from runstore.rows import resolve_artifact, resolve_run
from runstore.rules import check_conflict_strategy, check_folder
from runstore.store import Store


def login(ais_host: str | None = None, api_key: str | None = None,
          timeout: float | None = None) -> None:
    """Check the host and token against the server, then store them (0600) for later."""
    config = load_config()
    host = ais_host or config.host
    token = api_key or config.token
    if not host or not token:
        raise InvalidValueError("login needs ais_host and api_key. Try: the server URL and a "
                                "token from `runstore user add`")
    with Client(host, token, timeout_s=timeout or config.timeout_s, max_attempts=2) as client:
        client.request("GET", "/whoami")
        host = client.host
    save_credentials(host, token)


def logout() -> None:
    """Forget the stored credentials (environment variables still apply)."""
    delete_credentials()


def resolve_targets(store: Store, path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """('Run'|'Artifact', uuid) for a run/artifact dir, a parent of several, or a reference
    resolved by runstore.rows' one rule (runs first, then artifacts)."""
    text = os.fspath(path)
    for kind, resolver in (("Run", resolve_run), ("Artifact", resolve_artifact)):
        try:
            return [(kind, resolver(store, text)["uuid"])]
        except AmbiguousError:
            raise
        except NotFoundError:
            pass
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
    raise NotFoundError(f"no run or artifact {text!r} in the local store {store.home}. "
                        "Try: runstore ls")


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
    store = store or Store()
    targets = resolve_targets(store, path)  # a bad reference is refused before connecting
    own_client = client is None
    client = client or Client.from_config()
    try:
        results = []
        for kind, uuid in targets:
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
