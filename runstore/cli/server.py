"""runstore CLI: commands registered on the group in base.py."""

from runstore.cli.base import main  # noqa: F401
