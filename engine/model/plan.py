"""A plan: plain, serializable data. Changes per address with the action graph's edges, the
concerns per VM, and what the plan was made against (spec digest, state lineage and serial)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from engine.addresses import Address
from engine.diagnostics import Diagnostic
from engine.model.desired import Concern

PLAN_FORMAT = 1


class Action(StrEnum):
    NOOP = "no-op"
    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    REPLACE = "replace"
    FORGET = "forget"
    MOVE = "move"  # a VM's records re-keyed to its new address (Terraform's `moved`); only state
    VERIFY = "verify"  # a volume compared with a new source snapshot (`--verify`); nothing copied


SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-", Action.REPLACE: "-/+",
           Action.READ: "<=", Action.FORGET: "x", Action.MOVE: "->", Action.VERIFY: "=",
           Action.NOOP: " "}  # fmt: skip
VERIFY_PHRASES = {  # a VM's verify scope, as plan and show say it
    "full": "copies verified by sha256",
    "changed": "copies verified by sha256 (a warm delta sync: the areas it copied)",
}


@dataclass(frozen=True)
class Change:
    address: str
    kind: str  # source_snapshot | volume | port | flavor | conversion | server | moved
    action: Action
    reason: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    bytes: int | None = None  # bytes to copy (volume copies) or to upload (images)
    estimate: bool = False  # `bytes` is an estimate (delta from the recorded change rate)
    # a full copy onto a volume not known to read as zeros: the bytes of its holes it writes as
    # zeros (capacity minus what it reads; None: none, or not such a copy)
    zeros: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["action"] = self.action.value
        if self.zeros is None:  # plans without zero writes stay as they were
            del out["zeros"]
        return out


@dataclass(frozen=True)
class VMPlan:
    address: str
    name: str
    instance_uuid: str | None
    target_name: str
    mode: str
    flavor: str | None
    flavor_reason: str
    concerns: tuple[Concern, ...]
    blocked: bool
    downtime_seconds: float | None = None  # estimated cutover downtime
    verify: str = "off"  # off | full | changed: what of each copy is re-read and compared
    reader: str = ""  # how its disks are read: vddk | https | datastore_path ("": not recorded)
    conversion_host: str = ""  # the host its disks are written on ("": none placed; omitted)
    work_dir: str = ""  # output: image: the local directory of its disk files ("": omitted)
    local_bytes: int | None = None  # output: image: bytes this plan may add there (omitted)
    availability_zone: str = ""  # its zone, which a re-placement keeps ("": any; omitted)
    pinned: bool = False  # conversion_host is the spec's pin: never re-placed (False: omitted)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["concerns"] = [{"level": c.level.value, "code": c.code, "message": c.message}
                           for c in self.concerns]  # fmt: skip
        if not self.conversion_host:
            del out["conversion_host"]
        if not self.availability_zone:
            del out["availability_zone"]
        if not self.pinned:
            del out["pinned"]
        if not self.work_dir:
            del out["work_dir"], out["local_bytes"]
        return out


@dataclass(frozen=True)
class HostLoad:
    """One conversion host's share of a plan: the VMs placed on it, the bytes their changes
    copy, its copy slots (max_parallel, at most 25), the estimated copy time in seconds
    (bytes / (measured throughput per copy * slots)) and its delta syncs of unknown size (no
    delta measured yet: in neither bytes nor seconds; 0: omitted)."""

    name: str
    vms: int
    bytes: int
    slots: int
    seconds: float
    availability_zone: str | None = None
    unknown: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.unknown:
            del out["unknown"]
        return out


@dataclass(frozen=True)
class Plan:
    spec_digest: str
    state_lineage: str
    state_serial: int
    vms: tuple[VMPlan, ...]
    changes: tuple[Change, ...]
    edges: tuple[tuple[str, str], ...]
    diagnostics: tuple[Diagnostic, ...] = ()
    destroy: bool = False
    targets: tuple[str, ...] = ()
    created_at: str = ""
    format_version: int = PLAN_FORMAT
    verify: bool = False  # made with --verify: every replica compared whole with a new snapshot
    extra: Mapping[str, Any] = field(default_factory=dict)
    hosts: tuple[HostLoad, ...] = ()  # per conversion host; only when the spec lists several

    def counts(self) -> Counter[Action]:
        return Counter(c.action for c in self.changes)

    @property
    def blocked(self) -> int:
        """VMs blocked by errors among those the plan covers: every VM, or with targets the
        targeted ones (a plan of `--target vm.a` is not failed by vm.b's errors; vm.b's
        changes are not in it either way)."""
        scope = {str(Address.parse(t).vm) for t in self.targets}
        return sum(v.blocked for v in self.vms if not scope or v.address in scope)

    @property
    def has_changes(self) -> bool:
        return any(c.action is not Action.NOOP for c in self.changes)

    @property
    def bytes_to_copy(self) -> int:
        """Bytes the plan's copies read (uploads to Glance are `bytes_to_upload`)."""
        return sum(
            c.bytes or 0 for c in self.changes if c.action is not Action.NOOP and c.kind != "image"
        )

    @property
    def bytes_to_upload(self) -> int:
        """Bytes the plan's uploads to Glance send (output: image; estimates)."""
        return sum(
            c.bytes or 0 for c in self.changes if c.action is not Action.NOOP and c.kind == "image"
        )
