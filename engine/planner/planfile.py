"""Plans as JSON (schemas/plan.v1.json): shown with --json, saved with --out, applied as saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.diagnostics import Diagnostic, Location, Severity, parse_path
from engine.errors import UserError
from engine.model.desired import Concern, ConcernLevel
from engine.model.plan import PLAN_FORMAT, Action, Change, Plan, VMPlan


def to_json(plan: Plan) -> dict[str, Any]:
    counts = plan.counts()
    return {
        "format_version": plan.format_version,
        "created_at": plan.created_at,
        "spec_digest": plan.spec_digest,
        "state": {"lineage": plan.state_lineage, "serial": plan.state_serial},
        "destroy": plan.destroy,
        "targets": list(plan.targets),
        "summary": {
            "create": counts[Action.CREATE] + counts[Action.REPLACE],
            "update": counts[Action.UPDATE],
            "destroy": counts[Action.DELETE] + counts[Action.REPLACE],
            "read": counts[Action.READ],
            "forget": counts[Action.FORGET],
            "no_op": counts[Action.NOOP],
            "bytes_to_copy": plan.bytes_to_copy,
            "blocked_vms": sum(v.blocked for v in plan.vms),
            "errors": sum(d.severity is Severity.ERROR for d in plan.diagnostics),
        },
        "vms": [v.to_json() for v in plan.vms],
        "changes": [c.to_json() for c in plan.changes],
        "graph": {"edges": [list(e) for e in plan.edges]},
        "diagnostics": [d.to_json() for d in plan.diagnostics],
    }


def from_json(data: dict[str, Any]) -> Plan:
    if data.get("format_version") != PLAN_FORMAT:
        raise UserError(f"plan format {data.get('format_version')!r} is not {PLAN_FORMAT}")
    return Plan(
        spec_digest=data["spec_digest"],
        state_lineage=data["state"]["lineage"],
        state_serial=int(data["state"]["serial"]),
        vms=tuple(_vm(v) for v in data["vms"]),
        changes=tuple(_change(c) for c in data["changes"]),
        edges=tuple((str(u), str(v)) for u, v in data["graph"]["edges"]),
        diagnostics=tuple(_diagnostic(d) for d in data["diagnostics"]),
        destroy=bool(data["destroy"]),
        targets=tuple(data["targets"]),
        created_at=data["created_at"],
    )


def _vm(v: dict[str, Any]) -> VMPlan:
    concerns = tuple(
        Concern(ConcernLevel(c["level"]), c["code"], c["message"]) for c in v["concerns"]
    )
    return VMPlan(
        v["address"],
        v["name"],
        v["instance_uuid"],
        v["target_name"],
        v["mode"],
        v["flavor"],
        v["flavor_reason"],
        concerns,
        v["blocked"],
        v["downtime_seconds"],
        str(v.get("verify", "off")),  # absent from plans saved before it was recorded
    )


def _change(c: dict[str, Any]) -> Change:
    return Change(
        c["address"],
        c["kind"],
        Action(c["action"]),
        c["reason"],
        c["before"],
        c["after"],
        c["bytes"],
        c["estimate"],
    )


def _diagnostic(d: dict[str, Any]) -> Diagnostic:
    location = Location(d["file"], d["line"], d["column"]) if d.get("file") else None
    path = parse_path(str(d.get("path") or ""))
    return Diagnostic(Severity(d["severity"]), d["summary"], location, path, d.get("detail", ""))


def save(plan: Plan, path: Path, spec_file: str) -> None:
    data = to_json(plan)
    data["spec_file"] = spec_file
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def load(path: Path) -> tuple[Plan, str]:
    try:
        data = json.loads(path.read_text())
        return from_json(data), str(data.get("spec_file", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a ferry plan: {exc}") from exc
