#!/usr/bin/python
# Copyright: ferry maintainers
# Apache License 2.0 (see LICENSE in the ferry repository)
"""The apply module: `ferry apply` as a task."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: apply
short_description: Apply a ferry plan (disk syncs into Cinder volumes, cutovers to servers)
version_added: "0.1.0"
description:
  - Applies a saved plan (O(plan), made by M(ferry_migrate.ferry.plan) with C(out)) exactly, or
    plans the spec now and applies that, as C(ferry apply --auto-approve) does.
  - A saved plan is refused when the spec or the state changed since it was made.
  - C(changed) is false when there is nothing to apply (a second run of a finished wave).
  - In check mode only plans, and reports whether it would change anything.
  - A failure is ferry's one-line error as C(msg); what ferry did stays in its state, and the
    next apply resumes from the last checkpoint.
options:
  spec:
    description:
      - Path of the ferry migration spec (YAML), planned and applied now; with O(plan), the spec
        the plan was made from when it is not where the plan says.
      - Secrets are read as the spec says (C(password_file), environment variables), never
        passed as options.
    type: path
  plan:
    description:
      - A plan saved by M(ferry_migrate.ferry.plan) (C(out)), applied whole.
      - A spec (C(.yaml), C(.yml)) is refused here; give it as O(spec).
    type: path
  target:
    description:
      - With O(spec) alone, apply only these addresses (and what they depend on), for example
        C(vm.db01) for one cutover wave.
    type: list
    elements: str
    default: []
  verify:
    description:
      - With O(spec) alone, compare every selected replica (not cut over) with a new source
        snapshot by sha256; a mismatch marks the volume tainted.
    type: bool
    default: false
  adopt_lineage:
    description:
      - With O(spec) alone, lineages of lost ferry states whose volumes (and, with output image,
        Glance images) this state adopts (the lineage a refused volume's or image's error
        names), as C(ferry apply --adopt-lineage). Adopting writes this state's lineage on them.
      - C(unlabeled) takes over the objects an older ferry made without a lineage beside a
        running server (the C(unlabeled-beside-server) error names them), and the replica
        volumes it made of a VM no server runs (the C(unlabeled-volume) error names them).
    type: list
    elements: str
    default: []
  parallelism:
    description:
      - Steps run at once (copies are also bounded per conversion host and ESXi host), 1 to
        256.
      - Default, the slots of the conversion hosts the apply writes on plus 2, at least 4.
    type: int
  report:
    description: Write the HTML migration report (C(ferry report)) after an apply.
    type: bool
    default: true
extends_documentation_fragment:
  - ferry_migrate.ferry.state
  - ansible.builtin.action_common_attributes
author:
  - ferry maintainers (@ferry-migrate)
attributes:
  check_mode:
    support: full
    details: Plans only; C(changed) says whether the apply would change anything.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - Exactly one apply runs per state at a time (ferry's state lock); another fails with the
    holder named.
"""

EXAMPLES = r"""
- name: Replicate the wave's disks
  ferry_migrate.ferry.apply:
    spec: /etc/ferry/wave1.yaml

- name: Cut over one VM of the wave
  ferry_migrate.ferry.apply:
    spec: /etc/ferry/wave1.yaml
    target: [vm.db01]

- name: Apply what was approved
  ferry_migrate.ferry.apply:
    plan: /var/lib/ferry/wave1.plan
"""

RETURN = r"""
summary:
  description: The applied plan's counts (the C(summary) of C(ferry plan --json)).
  returned: always
  type: dict
  sample: {"create": 3, "update": 0, "destroy": 0, "bytes_to_copy": 1073741824}
log:
  description: >-
    The apply's event log, an absolute path (JSON lines, what C(ferry report) draws its
    timeline from).
  returned: when something was applied
  type: str
report:
  description: The HTML migration report written after the apply (O(report)), an absolute path.
  returned: when something was applied and O(report) is true
  type: str
stdout:
  description: What C(ferry apply) printed (the steps, the last line says what was copied).
  returned: when something was applied
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferry_migrate.ferry.plugins.module_utils.ferry import (
    STATE_OPTION,
    as_options,
    error_line,
    ferry_errors,
    refuse_state_password,
    require_ferry,
)

ARGUMENT_SPEC = {
    "spec": {"type": "path"},
    "plan": {"type": "path"},
    "target": {"type": "list", "elements": "str", "default": []},
    "verify": {"type": "bool", "default": False},
    "adopt_lineage": {"type": "list", "elements": "str", "default": []},
    "parallelism": {"type": "int"},
    "state_location": STATE_OPTION,
    "report": {"type": "bool", "default": True},
}


def run(params: dict, check_mode: bool) -> dict:
    """The module's result for its params. Raises FerryError (nothing applied, or a step failed:
    ApplyFailed)."""
    import io
    from pathlib import Path

    from rich.console import Console

    from engine.addresses import Address
    from engine.cli.apply import blocked_line, check_applicable, prepare, run_plan
    from engine.cli.plan import lineages
    from engine.cli.progress import HumanView
    from engine.cli.report import write_html
    from engine.errors import UserError
    from engine.planner import planfile

    if params["plan"] and (params["target"] or params["verify"]):
        raise UserError("target and verify select from a spec; a saved plan is applied whole")
    if params["plan"] and Path(params["plan"]).suffix in (".yaml", ".yml"):
        raise UserError(
            f"plan: {params['plan']} is a spec (YAML), not a saved plan: give it as spec, or "
            "give as plan the file the plan module saved (out)"
        )
    spec = Path(params["spec"]) if params["spec"] else None
    what = Path(params["plan"]) if params["plan"] else spec
    if what is None:  # required_one_of (ansible-test sanity's no-assert: never an assert)
        raise UserError("one of spec or plan is required")
    parallelism = params["parallelism"]
    if parallelism is not None and not 1 <= parallelism <= 256:  # as ferry apply --parallelism
        raise UserError(f"parallelism: {parallelism} is not in 1..256")
    targets = tuple(Address.parse(t) for t in params["target"])
    plan, data, _saved, location = prepare(
        what,
        params["state_location"],
        targets,
        spec if params["plan"] else None,
        params["verify"],
        adopt_lineages=lineages(params.get("adopt_lineage")),
    )
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, no_color=True, highlight=False)
    check_applicable(plan, console, as_json=False)
    out: dict = {"changed": plan.has_changes, "summary": planfile.to_json(plan)["summary"]}
    blocked = blocked_line(plan, reasons=True)
    if blocked and not plan.has_changes:
        raise UserError(blocked)
    if check_mode or not plan.has_changes:
        return out
    before = set(location.log_dir.glob("apply-*.jsonl"))
    code = run_plan(plan, data, location, params["parallelism"], (console, HumanView(console)))
    logs = sorted(set(location.log_dir.glob("apply-*.jsonl")) - before)
    out["log"] = str(logs[-1].resolve()) if logs else None  # the task's cwd is not the state's
    out["stdout"] = buffer.getvalue()
    if params["report"]:
        out["report"] = str(write_html(location).resolve())
    if code:
        lines = [x for x in out["stdout"].splitlines() if x.startswith(("failed:", "stopped:"))]
        out["failed"] = True
        out["msg"] = as_options(
            (lines[0] if lines else out["stdout"].strip().splitlines()[-1])
            + (f" ({len(lines)} steps failed; see log)" if len(lines) > 1 else "")
        )
    return out


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[("spec", "plan")],
        supports_check_mode=True,
    )
    require_ferry(module)
    refuse_state_password(module)
    try:
        result = run(module.params, module.check_mode)
    except ferry_errors() as exc:
        module.fail_json(msg=error_line(exc))
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
