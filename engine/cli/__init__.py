"""The `ferry` command line (typer); thin: parsing, rendering, exit codes."""
