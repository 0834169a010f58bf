"""The `runstore` click group; subcommand modules attach to it."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runstore")
def main() -> None:
    """runstore: an offline-first experiment tracker (local store, server, sync)."""
