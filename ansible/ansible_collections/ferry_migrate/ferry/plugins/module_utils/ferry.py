# Copyright: ferry maintainers
# Apache License 2.0 (see LICENSE in the ferry repository)
"""Shared by the collection's modules: importing ferry's library, its errors as one line, the
options every module takes."""

from __future__ import annotations

import re
import traceback
from typing import Any
from urllib.parse import unquote, urlsplit

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
# from an environment variable, `env:NAME`; a URL with a password is refused, the password
# masked in the result first: refuse_state_password).
STATE_OPTION: dict[str, Any] = {"type": "str", "required": False}


def require_ferry(module: AnsibleModule) -> None:
    """Fail the task when ferry's library cannot be imported by the module's Python."""
    if not HAS_FERRY:
        module.fail_json(
            msg=missing_required_lib("ferry", url="https://github.com/ferry-migrate/ferry"),
            exception=FERRY_IMPORT_ERROR,
        )


def refuse_state_password(module: AnsibleModule) -> None:
    """Fail the task when `state_location` is a PostgreSQL URL with a password, the password
    first registered in `module.no_log_values`: Ansible masks it in the task's result, whose
    `invocation.module_args` echo every option back to the controller (shown at -vvv, kept by
    AAP in each job event at any verbosity: break-it 16b F3). Before anything is read."""
    location = module.params.get("state_location") or ""
    if not location.startswith(("postgresql://", "postgres://")):
        return
    try:
        password = urlsplit(location).password
    except ValueError:  # not a URL ferry reads either: its own error says so
        return
    if password is None:
        return
    if password:
        module.no_log_values.update({password, unquote(password)})
    module.fail_json(
        msg="state_location must not carry a password (a task's arguments go into its result, "
        "job events and logs): give env:NAME with the DSN in an environment variable (the "
        "task's environment:, from a vault or an AAP credential), or the URL without its "
        "password and PGPASSWORD or a passfile (~/.pgpass) on the host the module runs on"
    )


def error_line(exc: BaseException) -> str:
    """ferry's one-line error, as `ferry` prints it after `error: ` (an invalid spec: its lines
    joined by '; ', a line without a place in the spec without the CLI's `error: ` prefix,
    which the task's failure says already), in the modules' words (`as_options`)."""
    if isinstance(exc, InvalidSpecError):
        return as_options("; ".join(_unprefixed(line) for line in exc.lines))
    return as_options(one_line(str(exc)))


# ferry's command lines as the modules say them: a task has options, not flags (break-it 16c F3)
SAVED_PLAN = re.compile(r"`ferry plan ((?:--[\w-]+ (?:[A-Z]+ )?)*)--out(?: PLAN)?`")
FLAGS = {
    "adopt-lineage": "adopt_lineage",
    "spec": "spec",
    "target": "target",
    "state": "state_location",
    "out": "out",
    "destroy": "destroy",
    "verify": "verify",
    "parallelism": "parallelism",
}
FLAG = re.compile(r"(?<![\w-])--(" + "|".join(FLAGS) + r")(?![\w-])")


def as_options(line: str) -> str:
    """`line` (a ferry message for the command line) with its commands and flags said as the
    modules' options: `--adopt-lineage` adopt_lineage, `--target` target, `--state`
    state_location, `ferry plan ... --out PLAN` the plan module's out."""
    line = SAVED_PLAN.sub(_saved_plan, line.replace("(--state or its DSN)", "(state_location)"))
    return FLAG.sub(lambda m: FLAGS[m.group(1)], line)


def _saved_plan(found: re.Match[str]) -> str:
    """`ferry plan --FLAG [VALUE] ... --out PLAN` as the plan module's options that make it."""
    flags = [FLAGS.get(f, f) for f in re.findall(r"--([\w-]+)", found.group(1))]
    return f"the plan module with {' and '.join([*flags, 'out'])}, then apply with plan"


def _unprefixed(line: str) -> str:
    prefix = "error: "
    return line[len(prefix) :] if line.startswith(prefix) else line


def ferry_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a module turns into a failed task with error_line as its msg."""
    return (FerryError,)
