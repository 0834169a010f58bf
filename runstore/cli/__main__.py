"""`python -m runstore.cli` runs the `runstore` command."""

from runstore.cli import main

main()
