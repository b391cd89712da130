#!/usr/bin/python
# Copyright: ferry maintainers
# Apache License 2.0 (see LICENSE in the ferry repository)
"""The discover module: the VMs a ferry spec selects, as facts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: discover
short_description: The VMs a ferry spec selects, as ferry's planner sees them
version_added: "0.1.0"
description:
  - Reads the spec's vCenter inventory and selects the VMs the spec's C(vms) entries name (and
    C(exclude) drops), as C(ferry plan) does.
  - Sets the fact C(ferry_vms), one entry per selected VM with its disks, NICs, CBT, snapshots,
    power and tools state (the JSON of C(ferry discover --json)).
  - Changes nothing.
options:
  spec:
    description:
      - Path of the ferry migration spec (YAML) on the host the module runs on.
      - Secrets are read as the spec says (C(password_file), environment variables), never
        passed as options.
    type: path
    required: true
requirements:
  - ferry (its Python library) in the Python the module runs with
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - ferry maintainers (@ferry-migrate)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: What the spec selects
  ferry_migrate.ferry.discover:
    spec: /etc/ferry/wave1.yaml

- name: Name the selected VMs
  ansible.builtin.debug:
    msg: "{{ ferry_vms | map(attribute='name') | list }}"
"""

RETURN = r"""
ansible_facts:
  description: The facts set.
  returned: always
  type: dict
  contains:
    ferry_vms:
      description: The selected VMs in spec order (the JSON of C(ferry discover --json)).
      type: list
      elements: dict
      sample: [{"name": "build-old", "power_state": "poweredOff", "disks": []}]
warnings:
  description: The selection's warnings (overlapping entries, an excluded VM named).
  returned: when there are any
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferry_migrate.ferry.plugins.module_utils.ferry import (
    error_line,
    ferry_errors,
    require_ferry,
)


def selected(spec_path: str) -> tuple[list[dict], list[str], list[str]]:
    """(the selected VMs' JSON, warning lines, error lines) for the spec at spec_path."""
    from pathlib import Path

    from engine.cli.discover import read_inventory
    from engine.cli.plan import load_spec
    from engine.diagnostics import Severity
    from engine.planner.selection import select

    loaded = load_spec(Path(spec_path))
    inventory = read_inventory(Path(spec_path))
    selection = select(dict(loaded.data), inventory)
    warnings = [d.render() for d in selection.diagnostics if d.severity is Severity.WARNING]
    errors = [d.render() for d in selection.diagnostics if d.severity is Severity.ERROR]
    return [vm.to_json() for vm, _entry in selection.vms], warnings, errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={"spec": {"type": "path", "required": True}},
        supports_check_mode=True,
    )
    require_ferry(module)
    try:
        vms, warnings, errors = selected(module.params["spec"])
    except ferry_errors() as exc:
        module.fail_json(msg=error_line(exc))
    for line in warnings:
        module.warn(line)
    if errors:
        module.fail_json(msg="; ".join(errors))
    module.exit_json(changed=False, ansible_facts={"ferry_vms": vms})


if __name__ == "__main__":
    main()
