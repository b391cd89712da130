"""Plans as JSON (schemas/plan.v1.json): shown with --json, saved with --out, applied as saved.

A saved plan is sealed: `integrity.sha256` is the sha256 of its canonical JSON (every key but
`integrity` and `spec_file`: the changes, the graph, the VMs, the spec digest and the state
serial), and with `$FERRY_PLAN_KEY` set also `integrity.hmac_sha256`, an HMAC-SHA256 of that
digest under the key — so a CI gate can prove the plan applied is the plan approved (OpenTofu
keeps plan files opaque instead; a JSON plan needs the seal). `load` refuses a plan whose content
does not match its seal. `spec_file` is stored relative to the plan file's folder, so a plan made
in CI applies from another directory or machine with the same checkout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.diagnostics import Diagnostic, Location, Severity, parse_path
from engine.errors import UserError
from engine.model.desired import Concern, ConcernLevel
from engine.model.plan import PLAN_FORMAT, Action, Change, HostLoad, Plan, VMPlan


def to_json(plan: Plan) -> dict[str, Any]:
    """The plan as schemas/plan.v1.json: `conversion_hosts` (each host's share) only when the
    spec lists several hosts, a VM's `conversion_host` only when it was placed."""
    counts = plan.counts()
    out = {
        "format_version": plan.format_version,
        "created_at": plan.created_at,
        "spec_digest": plan.spec_digest,
        "state": {"lineage": plan.state_lineage, "serial": plan.state_serial},
        "destroy": plan.destroy,
        "verify": plan.verify,
        "targets": list(plan.targets),
        "summary": {
            "create": counts[Action.CREATE] + counts[Action.REPLACE],
            "update": counts[Action.UPDATE],
            "destroy": counts[Action.DELETE] + counts[Action.REPLACE],
            "read": counts[Action.READ],
            "forget": counts[Action.FORGET],
            "move": counts[Action.MOVE],
            "verify": counts[Action.VERIFY],
            "no_op": counts[Action.NOOP],
            "bytes_to_copy": plan.bytes_to_copy,
            **({"bytes_to_upload": plan.bytes_to_upload} if plan.bytes_to_upload else {}),
            "blocked_vms": sum(v.blocked for v in plan.vms),
            "errors": sum(d.severity is Severity.ERROR for d in plan.diagnostics),
        },
        "vms": [v.to_json() for v in plan.vms],
        "changes": [c.to_json() for c in plan.changes],
        "graph": {"edges": [list(e) for e in plan.edges]},
        "diagnostics": [d.to_json() for d in plan.diagnostics],
    }
    if plan.hosts:
        out["conversion_hosts"] = [h.to_json() for h in plan.hosts]
    return out


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
        verify=bool(data.get("verify", False)),  # absent from plans saved before --verify planned
        hosts=tuple(HostLoad(**h) for h in data.get("conversion_hosts", ())),
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
        str(v.get("reader", "")),  # likewise
        str(v.get("conversion_host", "")),  # absent: not placed
        str(v.get("work_dir", "")),  # absent: output volume
        v.get("local_bytes"),
        str(v.get("availability_zone", "")),  # absent: any zone
        bool(v.get("pinned", False)),  # absent: placed by the plan
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
        c.get("zeros"),  # absent: no zero writes (and in plans saved before it was shown)
    )


def _diagnostic(d: dict[str, Any]) -> Diagnostic:
    location = Location(d["file"], d["line"], d["column"]) if d.get("file") else None
    path = parse_path(str(d.get("path") or ""))
    return Diagnostic(Severity(d["severity"]), d["summary"], location, path, d.get("detail", ""))


KEY_ENV = "FERRY_PLAN_KEY"  # the HMAC key that signs saved plans (never stored anywhere)
UNSEALED = ("integrity", "spec_file")


@dataclass(frozen=True)
class Saved:
    """A saved plan as loaded: the plan, the spec it was made from (a path as stored, and
    resolved against the plan file's folder), its sha256 (hex), whether it carries an HMAC and
    whether that HMAC was checked against `$FERRY_PLAN_KEY`."""

    plan: Plan
    spec_file: str
    spec_path: Path | None
    sha256: str
    signed: bool
    checked: bool

    def seal_line(self) -> str:
        """One line for people: the digest and what the signature proves."""
        if self.checked:
            proof = f"signature checked with ${KEY_ENV}"
        elif self.signed:
            proof = f"signed; signature not checked (${KEY_ENV} is not set)"
        else:
            proof = "not signed"
        return f"plan sha256 {self.sha256} ({proof})"


def seal_digest(data: Mapping[str, Any]) -> str:
    """sha256 (hex) of a plan's canonical JSON, without the keys the seal does not cover."""
    sealed = {k: v for k, v in data.items() if k not in UNSEALED}
    canonical = json.dumps(sealed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def signature(digest: str, key: str) -> str:
    """HMAC-SHA256 (hex) of a plan's digest under `key`."""
    return hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


def check_writable(path: Path) -> None:
    """Before a plan is made (a refresh takes minutes): `path` can be written as a plan file.
    Raises UserError (one line) when it is a directory or its directory does not exist or is
    not writable."""
    if path.is_dir():
        raise UserError(f"cannot save the plan to {path}: it is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"cannot save the plan to {path}: no directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot save the plan to {path}: permission denied")


def save(plan: Plan, path: Path, spec_file: Path, env: Mapping[str, str] = os.environ) -> str:
    """Write the plan to `path` (atomically: a `.tmp` beside it, renamed), sealed; returns its
    sha256 (hex). Raises UserError when it cannot be written (the `.tmp` removed)."""
    check_writable(path)
    data = to_json(plan)
    digest = seal_digest(data)
    data["integrity"] = {"sha256": digest}
    if env.get(KEY_ENV):
        data["integrity"]["hmac_sha256"] = signature(digest, env[KEY_ENV])
    data["spec_file"] = os.path.relpath(spec_file.resolve(), path.resolve().parent)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot save the plan to {path}: {exc.strerror or exc}") from exc
    return digest


def load(path: Path, env: Mapping[str, str] = os.environ) -> Saved:
    """Read a saved plan and check its seal (and its HMAC when `$FERRY_PLAN_KEY` is set).

    Raises UserError (one line) when the file is not a plan, was changed after it was saved,
    carries no seal, or its HMAC is missing or does not match the key."""
    if path.is_dir():  # break-it 16b L2: "is not a ferry plan: [Errno 21] Is a directory"
        raise UserError(f"{path} is a directory, not a saved plan file")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        digest = _checked(path, data, env)
        plan = from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a ferry plan: {exc}") from exc
    spec_file = str(data.get("spec_file") or "")
    signed = bool((data.get("integrity") or {}).get("hmac_sha256"))
    checked = bool(env.get(KEY_ENV))
    return Saved(plan, spec_file, _spec_path(path, spec_file), digest, signed, checked)


def _checked(path: Path, data: dict[str, Any], env: Mapping[str, str]) -> str:
    seal = data.get("integrity")
    if not isinstance(seal, dict) or not seal.get("sha256"):
        raise UserError(
            f"{path} carries no integrity digest (saved by an older ferry, or edited): "
            "run `ferry plan --out` again"
        )
    digest = seal_digest(data)
    if not hmac.compare_digest(digest, str(seal["sha256"])):
        raise UserError(
            f"{path} was changed after it was saved (its content hashes to {digest[:12]}…, "
            f"it was sealed as {str(seal['sha256'])[:12]}…): refused; run `ferry plan --out` again"
        )
    key = env.get(KEY_ENV)
    if key:
        mac = seal.get("hmac_sha256")
        if not mac:
            raise UserError(f"{path} is not signed, and {KEY_ENV} is set: refused")
        if not hmac.compare_digest(signature(digest, key), str(mac)):
            raise UserError(f"{path} is not signed with the key in {KEY_ENV}: refused")
    return digest


def _spec_path(plan_file: Path, spec_file: str) -> Path | None:
    """The spec a plan was made from: relative to the plan file's folder (as saved now), or to
    the working directory (plans saved before); None when neither exists."""
    if not spec_file:
        return None
    stored = Path(spec_file)
    for candidate in (plan_file.parent / stored, stored):
        if candidate.is_file():
            return candidate
    return None
