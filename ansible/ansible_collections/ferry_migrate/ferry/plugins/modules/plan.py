#!/usr/bin/python
# Copyright: ferry maintainers
# Apache License 2.0 (see LICENSE in the ferry repository)
"""The plan module: `ferry plan --json` as a task."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: plan
short_description: Plan a ferry migration (what apply would do)
version_added: "0.1.0"
description:
  - Reads the spec's source, destination and state and returns the plan, as
    C(ferry plan --json) prints it.
  - C(changed) is true when the plan has changes (something to create, update, destroy, copy
    or verify), so a play in check mode shows which jobs have work to do.
  - With O(out), saves the plan (sealed, with its graph) for M(ferry_migrate.ferry.apply) to
    apply exactly; not in check mode.
  - A plan with errors, or with VMs its errors block, fails the task with ferry's one-line error.
options:
  spec:
    description:
      - Path of the ferry migration spec (YAML).
      - Secrets are read as the spec says (C(password_file), environment variables), never
        passed as options.
    type: path
    required: true
  target:
    description:
      - Plan only these addresses (and what they depend on), as C(--target), for example
        C(vm.db01) or C(vm.db01.disk[0]).
    type: list
    elements: str
    default: []
  destroy:
    description: Plan the teardown of what ferry created (never the source).
    type: bool
    default: false
  verify:
    description:
      - Compare every selected replica (not cut over) with a new source snapshot by sha256.
      - Not with O(destroy).
    type: bool
    default: false
  adopt_lineage:
    description:
      - Lineages of lost ferry states whose volumes (and, with output image, Glance images) this
        state adopts (the lineage a refused volume's or image's error names), as
        C(ferry plan --adopt-lineage). Adopting writes this state's lineage on them.
      - C(unlabeled) takes over the objects an older ferry made without a lineage beside a
        running server (the C(unlabeled-beside-server) error names them), and the replica
        volumes it made of a VM no server runs (the C(unlabeled-volume) error names them).
    type: list
    elements: str
    default: []
  out:
    description:
      - Save the plan to this file (not in check mode, nor when the plan has errors).
    type: path
extends_documentation_fragment:
  - ferry_migrate.ferry.state
  - ansible.builtin.action_common_attributes
author:
  - ferry maintainers (@ferry-migrate)
attributes:
  check_mode:
    support: full
    details: Planning changes nothing; check mode only does not save O(out).
  diff_mode:
    support: full
    details: The diff is the plan as C(ferry plan) shows it.
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Plan the wave (check mode shows whether it has work)
  ferry_migrate.ferry.plan:
    spec: /etc/ferry/wave1.yaml
    target: [vm.db01]
    out: /var/lib/ferry/wave1.plan
  check_mode: true
  diff: true
"""

RETURN = r"""
plan:
  description: The plan, as C(ferry plan --json) prints it.
  returned: always
  type: dict
  sample: {"format_version": 1, "summary": {"create": 3, "bytes_to_copy": 1073741824}}
summary:
  description: The plan's last line (C(No changes...) or C(Plan... to create...)).
  returned: always
  type: str
  sample: "Plan: 3 to create, 0 to update, 0 to destroy; 1.0 GiB to copy."
saved:
  description: The sha256 the saved plan is sealed with (O(out) given, not in check mode).
  returned: when saved
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
    "spec": {"type": "path", "required": True},
    "target": {"type": "list", "elements": "str", "default": []},
    "destroy": {"type": "bool", "default": False},
    "verify": {"type": "bool", "default": False},
    "adopt_lineage": {"type": "list", "elements": "str", "default": []},
    "state_location": STATE_OPTION,
    "out": {"type": "path"},
}


def shown(plan: object) -> str:
    """The plan as `ferry plan` shows it, without colours."""
    import io

    from rich.console import Console

    from engine.cli.plan import render

    buffer = io.StringIO()
    render(plan, Console(file=buffer, width=160, no_color=True, highlight=False))
    return buffer.getvalue()


def run(params: dict, check_mode: bool) -> dict:
    """The module's result for its params. Raises FerryError."""
    from pathlib import Path

    from engine.addresses import Address
    from engine.cli.plan import blocked_reasons, exit_code, lineages, plan_spec, summary
    from engine.diagnostics import Severity
    from engine.planner import planfile

    spec = Path(params["spec"])
    targets = tuple(Address.parse(t) for t in params["target"])
    result = plan_spec(
        spec,
        params["state_location"],
        targets,
        destroy=params["destroy"],
        verify=params["verify"],
        adopt_lineages=lineages(params.get("adopt_lineage")),
    )
    out = {
        "changed": result.has_changes,
        "plan": planfile.to_json(result),
        "summary": summary(result),
        "diff": {"prepared": shown(result)},
    }
    if exit_code(result, detailed=False):
        errors = [d.summary for d in result.diagnostics if d.severity is Severity.ERROR]
        blocked = blocked_reasons([v for v in result.vms if v.blocked])
        said = errors[0] if errors else f"blocked by errors: {'; '.join(blocked)}"
        out["failed"] = True
        out["msg"] = as_options(f"{said}: fix it and plan again ({out['summary']})")
        return out
    if params["out"] and not check_mode:
        out["saved"] = planfile.save(result, Path(params["out"]), spec)
    return out


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    require_ferry(module)
    refuse_state_password(module)
    if module.params["verify"] and module.params["destroy"]:
        module.fail_json(msg="verify compares replicas with their source; destroy deletes them")
    try:
        result = run(module.params, module.check_mode)
    except ferry_errors() as exc:
        module.fail_json(msg=error_line(exc))
    if not module._diff:
        result.pop("diff")
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
