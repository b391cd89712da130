"""`python -m engine.cli` is the `ferry` command."""

from engine.cli.app import main

main()
