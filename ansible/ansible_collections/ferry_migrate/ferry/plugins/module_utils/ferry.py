# Copyright: ferry maintainers
# Apache License 2.0 (see LICENSE in the ferry repository)
"""Shared by the collection's modules: importing ferry's library, its errors as one line, the
options every module takes."""

from __future__ import annotations

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from engine.errors import FerryError, InvalidSpecError, one_line
except ImportError:
    HAS_FERRY = False
    FERRY_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_FERRY = True
    FERRY_IMPORT_ERROR = None

# The options of plan and apply that name the state (never a secret: a PostgreSQL DSN is read
# from an environment variable, `env:NAME`).
STATE_OPTION: dict[str, Any] = {"type": "str", "required": False}


def require_ferry(module: AnsibleModule) -> None:
    """Fail the task when ferry's library cannot be imported by the module's Python."""
    if not HAS_FERRY:
        module.fail_json(
            msg=missing_required_lib("ferry", url="https://github.com/ferry-migrate/ferry"),
            exception=FERRY_IMPORT_ERROR,
        )


def error_line(exc: BaseException) -> str:
    """ferry's one-line error, as `ferry` prints it after `error: ` (an invalid spec: its lines
    joined by '; ', a line without a place in the spec without the CLI's `error: ` prefix,
    which the task's failure says already)."""
    if isinstance(exc, InvalidSpecError):
        return "; ".join(_unprefixed(line) for line in exc.lines)
    return one_line(str(exc))


def _unprefixed(line: str) -> str:
    prefix = "error: "
    return line[len(prefix) :] if line.startswith(prefix) else line


def ferry_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a module turns into a failed task with error_line as its msg."""
    return (FerryError,)
