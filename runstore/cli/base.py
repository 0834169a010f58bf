"""The `runstore` click group, and the one edge between the library's errors and the user.

Every command is wrapped in :func:`user_errors`: a RunstoreError (and only that: the library
raises its own classes for everything a user can cause, see runstore/errors.py) becomes click's
one-line ``Error: <what>. Try: <fix>`` with exit status 1. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from runstore.errors import RunstoreError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn RunstoreError into click's one-line `Error: ...` (exit status 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RunstoreError as exc:
            raise click.ClickException(" ".join(str(exc).split("\n"))) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runstore")
def main() -> None:
    """runstore: an offline-first experiment tracker (local store, server, sync)."""
