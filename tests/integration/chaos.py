"""The chaos run (issue 12): a seeded, model-based test that interleaves, on the lab, guest writes,
applies stopped by SIGINT or kill -9 at chosen points, CBT resets, snapshots taken and removed
by someone else, power off/on (and, switchable, renames, disk grows and cutovers), and after
every apply that completes checks the oracle:

- every recorded volume equals its source disk at the snapshot of its last sync (sha256 of both;
  the harness digests the live disk when an apply starts: no guest write lands before a VM's
  snapshot during an apply, so that digest is the snapshot's content);
- a plan that is a no-op for a VM's disks only when each of its volumes equals the disk now;
- no duplicate OpenStack object (one volume per disk, the recorded one; one port per MAC; one
  server per VM) and no snapshot left behind (ferry's in vCenter, protection ones in Cinder);
- a cut-over VM: one ACTIVE server booted from the recorded volumes, its source off;
- an apply that failed or was stopped leaves the source powered as it found it (no cutover here
  asks for `power_off.on_failure: leave_off`);
- the demo spec reads disks through the https reader (the base extent), which refuses a VM
  holding a snapshot someone else took (concern snapshot-with-https-reader): while a VM holds
  one, an apply that ends with exit 1 having blocked exactly those VMs and failed nothing
  counts as completed, and it must not sync them.

A run is a pure function of (seed, steps, enabled operations): `generate` draws the whole step
list first from `random.Random(seed)` and a model of the VMs, so a failing seed is replayed by
its seed or by its step list (written to `<log dir>/seed-<S>/steps.json`); every step's outcome,
the apply's JSON events and stderr are kept next to it.

Hypothesis' RuleBasedStateMachine was the first choice; it does not fit here: one example runs
for minutes on a lab whose VMs and cloud persist across examples, so shrinking (hundreds of
examples) is impractical. `minimise` does what shrinking would, on demand: it drops steps while
the same failure still happens.

    scripts/chaos --seeds 20 --steps 15          # more seeds than CI runs
    scripts/chaos --seed 7 --steps 12            # one seed again
    scripts/chaos --replay <dir>/seed-7/steps.json [--minimise]
    scripts/chaos --regressions                  # the failing runs found so far (REGRESSIONS)
    CHAOS_OPS=default,rename,grow,cutover scripts/chaos --seeds 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyVmomi import vim

from engine.addresses import Address
from engine.lab import disks as lab_disks
from engine.lab.estate import GiB, LabVM, MiB, find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.power import power_on, power_state
from engine.providers.vsphere.read import fetch_property, retrieve
from engine.providers.vsphere.session import session
from engine.providers.vsphere.snapshots import create_snapshot, remove_snapshot
from engine.providers.vsphere.tasks import wait_task
from engine.spec.validate import reader_of
from tests.integration.cli import ROOT
from tests.integration.converge import records, volume_file

VMS = ("web01", "build-old")  # a powered-on VM with two disks, a powered-off one with one

# Operations today's code handles (CI runs these); the rest are drawn only when enabled.
DEFAULT_OPS = ("write", "apply", "stop", "cbt_reset", "foreign_snapshot", "power")
# stop_full: a stop that may land in a full copy (the first sync, or the one after a CBT reset),
# which the next apply resumes from a newer snapshot (issue 12, fault 1).
# uncutover: a VM in cutover mode put back to replicate before its server booted (its ports,
# protection snapshots and conversion record must go); server_delete: a cut-over VM's server
# deleted by hand while its source stays off (the next apply boots it again from the volumes).
# test_boot: a replica volume attached by a server that is not ferry's, written (a MiB at a
# random offset), let go: the next apply copies it in full (its Cinder updated_at moved).
EXTRA_OPS = ("stop_full", "rename", "grow", "cutover", "uncutover", "server_delete", "test_boot")
ALL_OPS = DEFAULT_OPS + EXTRA_OPS
WEIGHTS = {
    "write": 30,
    "apply": 14,
    "stop": 16,
    "stop_full": 8,
    "cbt_reset": 5,
    "foreign_snapshot": 6,
    "power": 6,
    "rename": 4,
    "grow": 3,
    "cutover": 6,
    "uncutover": 4,
    "server_delete": 4,
    "test_boot": 5,
}
# Where a stop lands (matched on the apply's --json events); the cutover points only arise when
# a VM is in cutover mode.
STOP_POINTS = ("snapshot", "copy", "copy_mid", "verify", "synced")
CUTOVER_POINTS = ("source_off", "protect", "conversion", "port", "boot")
LENGTHS = (512, 4096, 65536, MiB, 2 * MiB + 512, 5 * MiB, 32 * MiB, 96 * MiB)
BOUNDARIES = (2 * MiB, 4 * MiB, 64 * MiB)  # request sizes and a checkpoint-sized stride
APPLY_TIMEOUT = 300.0


class ChaosError(AssertionError):
    """The oracle found a wrong replica, a duplicate, or an apply that should have completed."""


# -- the steps --------------------------------------------------------------------------------


@dataclass
class VMModel:
    """What the generator knows of a VM (from the steps alone, never from the lab)."""

    name: str
    powered_on: bool
    cbt: bool = True
    renamed: bool = False
    grown: set[int] = field(default_factory=set)
    foreign: int = 0  # snapshots someone else took and did not remove yet
    cutover: bool = False  # mode: cutover asked
    synced: bool = False  # a complete apply synced it since the start or its last CBT reset
    writes: list[tuple[int, int, int]] = field(default_factory=list)  # (disk, offset, length)


def enabled_ops(text: str | None = None) -> tuple[str, ...]:
    """The operations named by `text` (or $CHAOS_OPS), comma-separated; `default` stands for
    DEFAULT_OPS, `all` for every operation. Unknown names: ValueError."""
    names: list[str] = []
    for raw in (text or os.environ.get("CHAOS_OPS") or "default").split(","):
        part = raw.strip()
        expanded = {"default": DEFAULT_OPS, "all": ALL_OPS}.get(part, (part,))
        for name in expanded:
            if name not in ALL_OPS:
                raise ValueError(f"unknown chaos operation {name!r} (known: {', '.join(ALL_OPS)})")
            if name not in names:
                names.append(name)
    return tuple(names)


def generate(seed: int, steps: int, ops: tuple[str, ...] = DEFAULT_OPS) -> list[dict[str, Any]]:
    """The step list of a seed: `steps` steps drawn from `ops`, the last one always a complete
    apply (so the oracle runs at the end). Each step is a JSON-able dict with an "op"."""
    rng = random.Random(seed)
    model = {n: VMModel(n, _vm(n).powered_on) for n in VMS}
    out: list[dict[str, Any]] = []
    for index in range(max(steps - 1, 0)):
        step = None
        for _ in range(100):  # an op may not fit the model now (no VM powered on to write to)
            op = rng.choices(ops, weights=[WEIGHTS[o] for o in ops])[0]
            step = _draw(rng, op, model, index, seed)
            if step is not None:
                break
        step = step or {"op": "apply"}
        out.append(step)
        _advance(model, step)
    out.append({"op": "apply", "plan": True})
    return out


def _draw(
    rng: random.Random, op: str, model: dict[str, VMModel], index: int, seed: int
) -> dict[str, Any] | None:
    live = [m for m in model.values() if not m.cutover]
    if op == "write":
        on = [m for m in live if m.powered_on]
        return _draw_write(rng, rng.choice(on), index, seed) if on else None
    if op == "apply":
        return {
            "op": "apply",
            "write_after_snapshot": rng.random() < 0.3,
            "plan": rng.random() < 0.35,  # a plan costs 10-30 s: not after every apply
        }
    if op == "stop" and not all(m.synced for m in model.values()):
        return None  # its next sync is a full copy: only stop_full may stop it
    if op in ("stop", "stop_full"):
        return _draw_stop(rng, op, model, index, seed)
    if op in ("uncutover", "server_delete"):
        cut = [m for m in model.values() if m.cutover]
        return {"op": op, "vm": rng.choice(cut).name} if cut else None
    return _draw_on(rng, op, rng.choice(live)) if live else None


def _draw_on(rng: random.Random, op: str, vm: VMModel) -> dict[str, Any] | None:
    """A step of `op` on `vm` (a VM not in cutover mode), or None when it does not fit."""
    if op == "cbt_reset":
        return {"op": "cbt_reset", "vm": vm.name}
    if op == "foreign_snapshot":
        action = "remove" if vm.foreign and rng.random() < 0.6 else "create"
        return {"op": "foreign_snapshot", "vm": vm.name, "action": action}
    if op == "power":
        return {"op": "power", "vm": vm.name, "on": not vm.powered_on}
    if op == "rename":
        return {"op": "rename", "vm": vm.name, "renamed": not vm.renamed}
    if op == "grow":
        disks = [d.key for d in _vm(vm.name).disks if d.key not in vm.grown]
        return (
            {"op": "grow", "vm": vm.name, "disk": rng.choice(disks), "by": GiB} if disks else None
        )
    if op == "cutover":
        return {"op": "cutover", "vm": vm.name}
    if op == "test_boot":
        disk = rng.choice(_vm(vm.name).disks)
        offset = rng.randrange(0, disk.capacity - MiB, 4096)
        return {"op": "test_boot", "vm": vm.name, "disk": disk.key, "offset": offset}
    raise ValueError(op)


def _draw_stop(
    rng: random.Random, op: str, model: dict[str, VMModel], index: int, seed: int
) -> dict[str, Any]:
    """An apply stopped at a point; its VM's disk slowed by a read delay (so the copy lasts), and
    written first (32-96 MiB, so there is a copy to stop) when the VM runs."""
    live = [m for m in model.values() if not m.cutover]
    points = STOP_POINTS + (CUTOVER_POINTS if any(m.cutover for m in live) else ())
    vm = rng.choice(list(model.values()))
    key = rng.choice(_vm(vm.name).disks).key
    fill = None
    if vm.powered_on and not vm.cutover and rng.random() < 0.7:
        fill = _draw_write(rng, vm, index, seed, disk=key, length=rng.choice((32, 64, 96)) * MiB)
    at, slow = rng.choice(points), rng.random() >= 0.25
    return {
        "op": "stop",
        "full": op == "stop_full",
        "signal": rng.choice(("SIGINT", "SIGKILL")),
        "at": at,
        # a copy point in the slowed disk's copy (else the first copy's of the apply)
        "on": f"vm.{vm.name}.disk[{key}]" if slow and at.startswith(("copy", "verify")) else None,
        "after_ms": rng.choice((0, 50, 200, 500, 2500)),
        "slow": [vm.name, key, rng.choice((200, 500, 1000))] if slow else None,
        "fill": fill,
    }


def _draw_write(
    rng: random.Random,
    vm: VMModel,
    index: int,
    seed: int,
    disk: int | None = None,
    length: int | None = None,
) -> dict[str, Any]:
    """A write across a request or checkpoint boundary, or over an earlier write (overlap)."""
    disks = _vm(vm.name).disks
    where = next((d for d in disks if d.key == disk), None) or rng.choice(disks)
    length = length or rng.choice(LENGTHS)
    earlier = [w for w in vm.writes if w[0] == where.key]
    if earlier and rng.random() < 0.35:
        _, at, was = rng.choice(earlier)
        offset = at + rng.choice((-4096, 0, 512, was // 2, was - 512))
    else:
        stride = rng.choice(BOUNDARIES)
        offset = rng.randrange(1, where.capacity // stride) * stride
        offset -= rng.choice((0, 512, 4096, length // 2, length - 512 if length > 512 else 0))
    offset = min(max(offset, 0), where.capacity - length)
    offset -= offset % 512
    return {
        "op": "write",
        "vm": vm.name,
        "disk": where.key,
        "offset": offset,
        "length": length,
        "seed": lab_disks.seed_of("chaos", seed, index),
    }


def _advance(model: dict[str, VMModel], step: dict[str, Any]) -> None:
    op, vm = step["op"], model.get(step.get("vm", ""))
    if op == "apply":
        for each in model.values():
            each.synced = True
    if op == "stop" and step.get("fill"):
        _advance(model, step["fill"])
    if vm is None:
        return
    if op == "write":
        vm.writes.append((step["disk"], step["offset"], step["length"]))

    elif op == "cbt_reset":
        vm.synced = False
    elif op == "foreign_snapshot":
        vm.foreign += 1 if step["action"] == "create" else -1
    elif op == "power":
        vm.powered_on = step["on"]
    elif op == "rename":
        vm.renamed = step["renamed"]
    elif op == "grow":
        vm.grown.add(step["disk"])
        vm.synced = False
    elif op == "cutover":
        vm.cutover = True
    elif op == "uncutover":
        vm.cutover = False


def _vm(name: str) -> LabVM:
    found = find_vm(name)
    assert found is not None, name
    return found


# -- the run ----------------------------------------------------------------------------------


@dataclass
class ApplyRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    stopped: str | None = None  # "SIGINT at copy" when the harness stopped it


@dataclass
class World:
    """One seed's run on the lab: its own state file and spec, the VMs' names and modes, and the
    digest each volume must have (of the snapshot its last sync read)."""

    lab: Lab
    si: Any
    log_dir: Path
    seed: int
    verify: dict[str, str]
    state: Path = field(init=False)
    names: dict[str, str] = field(default_factory=dict)  # estate name → name in vCenter now
    modes: dict[str, str] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # volume address → sha256
    capacity: dict[tuple[str, int], int] = field(default_factory=dict)
    foreign: dict[str, list[Any]] = field(default_factory=dict)
    applies: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.state = self.log_dir / "ferry.db"
        for name in VMS:
            self.names[name] = name
            self.modes[name] = "replicate"
            for disk in _vm(name).disks:
                self.capacity[(name, disk.key)] = disk.capacity

    # -- vCenter and the lab ------------------------------------------------------------------

    def ref(self, name: str) -> Any:
        uuid = _vm(name).instance_uuid
        return next(
            o.ref
            for o in retrieve(self.si, vim.VirtualMachine, ["config.instanceUuid"])
            if o.props.get("config.instanceUuid") == uuid
        )

    def power(self, name: str) -> str:
        return power_state(self.si, self.ref(name))

    def spec(self) -> Path:
        head = (ROOT / "plans" / "demo.yaml").read_text().split("\nvms:")[0]
        head = head.replace(
            "power_off: {policy: graceful, timeout: 300, force_after: true}",
            "power_off: {policy: graceful, timeout: 5, force_after: true}",
        )
        entries = []
        for name in VMS:
            entry = (
                f"  - instance_uuid: {_vm(name).instance_uuid}\n    verify: {self.verify[name]}\n"
            )
            if self.modes[name] == "cutover":
                entry += "    mode: cutover\n    convert: false\n"
            entries.append(entry)
        spec = self.log_dir / "spec.yaml"
        spec.write_text(f"{head}\nvms:\n" + "".join(entries))
        return spec

    def live_digests(self) -> dict[str, str]:
        """sha256 of every disk's live bytes now, by volume address."""
        out = {}
        for name in VMS:
            vm = _vm(name)
            for disk in vm.disks:
                path = lab_disks.live_path(self.lab.disks, vm, disk.key)
                out[self.address(name, disk.key)] = content_digest(
                    path, self.capacity[(name, disk.key)]
                )
        return out

    def address(self, name: str, key: int) -> str:
        return f"vm.{self.names[name]}.disk[{key}]"

    # -- steps --------------------------------------------------------------------------------

    def run(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        """Do one step; returns what happened (for the step log). Oracle failures raise."""
        op = step["op"]
        began = time.monotonic()
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_{op}")
        outcome = handler(step)
        outcome["seconds"] = round(time.monotonic() - began, 2)
        self.log.append({"index": index, "step": step, **outcome})
        with (self.log_dir / "steps.log.jsonl").open("a") as out:
            out.write(json.dumps(self.log[-1]) + "\n")
        return outcome

    def _write(self, step: dict[str, Any]) -> dict[str, Any]:
        if self.modes[step["vm"]] == "cutover" and self.power(step["vm"]) != "poweredOn":
            return {"skipped": "the VM was cut over"}
        self.lab.write(step["vm"], step["disk"], step["offset"], step["length"], seed=step["seed"])
        return {}

    def _cbt_reset(self, step: dict[str, Any]) -> dict[str, Any]:
        ref = self.ref(step["vm"])
        for enabled in (False, True):
            spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
            wait_task(self.si, ref.ReconfigVM_Task(spec), "toggle CBT")
        return {}

    def _foreign_snapshot(self, step: dict[str, Any]) -> dict[str, Any]:
        name = step["vm"]
        taken = self.foreign.setdefault(name, [])
        if step["action"] == "create":
            taken.append(create_snapshot(self.si, self.ref(name), f"chaos-backup-{len(taken)}"))
            return {"snapshot": taken[-1]._moId}
        if not taken:
            return {"skipped": "no snapshot of ours to remove"}
        snapshot = taken.pop(0)
        remove_snapshot(self.si, snapshot)
        return {"snapshot": snapshot._moId}

    def _power(self, step: dict[str, Any]) -> dict[str, Any]:
        if self.modes[step["vm"]] == "cutover":  # an uncutover skipped: the generator's model
            return {"skipped": "the VM is in cutover mode"}  # took it for replicated
        ref = self.ref(step["vm"])
        if step["on"]:
            power_on(self.si, ref)
        elif power_state(self.si, ref) == "poweredOn":
            wait_task(self.si, ref.PowerOffVM_Task(), "power off")
        return {"power": power_state(self.si, ref)}

    def _rename(self, step: dict[str, Any]) -> dict[str, Any]:
        name = step["vm"]
        new = f"{name}-chaos" if step["renamed"] else name
        wait_task(self.si, self.ref(name).Rename_Task(new), "rename")
        for disk in _vm(name).disks:  # the replica is the same: it moves with the VM's name
            if self.address(name, disk.key) in self.expected:
                moved = self.expected.pop(self.address(name, disk.key))
                self.expected[f"vm.{new}.disk[{disk.key}]"] = moved
        self.names[name] = new
        return {"name": new}

    def _grow(self, step: dict[str, Any]) -> dict[str, Any]:
        name, key = step["vm"], step["disk"]
        ref = self.ref(name)
        device = next(
            d for d in fetch_property(self.si, ref, "config.hardware.device") if d.key == key
        )
        size = int(device.capacityInBytes or device.capacityInKB * 1024) + int(step["by"])
        device.capacityInBytes, device.capacityInKB = size, size // 1024
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=device)
        wait_task(self.si, ref.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), "grow")
        live = lab_disks.live_path(self.lab.disks, _vm(name), key)
        if live.stat().st_size < size:  # the disk file grows as vSphere's would
            os.truncate(live, size)
        self.capacity[(name, key)] = size
        return {"capacity": size}

    def _cutover(self, step: dict[str, Any]) -> dict[str, Any]:
        self.modes[step["vm"]] = "cutover"
        return {}

    def _servers(self, name: str) -> list[Any]:
        conn = self.lab.openstack("ferry-lab")
        uuid = _vm(name).instance_uuid
        return [s for s in conn.compute.servers() if (s.metadata or {}).get("ferry_vm") == uuid]

    def _uncutover(self, step: dict[str, Any]) -> dict[str, Any]:
        """Back to replicate, unless a server was booted (a finished cutover, or a boot an apply
        was stopped in): that is another story (the server settles the volumes)."""
        name = step["vm"]
        if self._servers(name) or self._records().get(f"vm.{self.names[name]}.server"):
            return {"skipped": "a server was booted"}  # (the plan warns: replicate-after-cutover)
        self.modes[name] = "replicate"
        return {}

    def _server_delete(self, step: dict[str, Any]) -> dict[str, Any]:
        """The cut-over server deleted by hand while the source stays off: the next apply boots
        a server again from the recorded volumes (they equal the final sync)."""
        name = step["vm"]
        servers = self._servers(name)
        if self.modes[name] != "cutover" or not servers or self.power(name) != "poweredOff":
            return {"skipped": "no server of a cut-over VM whose source is off"}
        conn = self.lab.openstack("ferry-lab")
        for server in servers:
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=120, interval=0.25)
        for disk in _vm(name).disks:  # the volumes detach as the server goes
            record = self._records().get(self.address(name, disk.key)) or {}
            if record.get("volume_id"):
                _wait_detached(conn, record["volume_id"])
        return {"deleted": [s.id for s in servers]}

    def _test_boot(self, step: dict[str, Any]) -> dict[str, Any]:
        """A server that is not ferry's attaches the disk's replica volume, writes a MiB at
        `offset` and lets it go. Only where ferry recorded the volume's Cinder updated_at after
        its last write (a sync, a Ctrl-C's detach): after a kill -9 mid-copy nothing says what
        the volume held after ferry's own attach (a documented gap), and a volume still
        attached (such a kill's) is left alone."""
        name, key = step["vm"], step["disk"]
        record = self._records().get(self.address(name, key)) or {}
        if self.modes[name] == "cutover" or not record.get("volume_updated_at"):
            return {"skipped": "no volume ferry recorded after its last write"}
        conn = self.lab.openstack("ferry-lab")
        volume_id = str(record["volume_id"])
        if conn.block_storage.get_volume(volume_id).status != "available":
            return {"skipped": f"volume {volume_id} is attached"}
        host = conn.compute.find_server("ferry-conversion-01", ignore_missing=False)
        conn.compute.create_volume_attachment(host.id, volume=volume_id)
        conn.block_storage.wait_for_status(
            conn.block_storage.get_volume(volume_id), "in-use", interval=0.25
        )
        with volume_file(self.lab, volume_id).open("r+b") as f:
            f.seek(step["offset"])
            f.write(random.Random(step["offset"]).randbytes(MiB))
        conn.compute.delete_volume_attachment(host.id, volume_id)
        _wait_detached(conn, volume_id)
        return {"volume": volume_id}

    def _apply(self, step: dict[str, Any]) -> dict[str, Any]:
        writes = step.get("write_after_snapshot", False)
        run = self.apply(after_snapshot=self._write_after_snapshot if writes else None)
        self.completed(run)
        return {"returncode": run.returncode, **self.check(plan=step.get("plan", True))}

    def blocked(self) -> set[str]:
        """The VMs the plan refuses now: those holding a snapshot someone else took, when the
        spec reads disks through their base extent (the https reader)."""
        if reader_of(yaml.safe_load(self.spec().read_text())) != "https":
            return set()
        return {name for name in VMS if self.foreign.get(name)}

    def completed(self, run: ApplyRun) -> None:
        """Raise ChaosError unless `run` (not stopped) completed: exit 0, or exit 1 having
        blocked exactly the VMs `blocked` names and failed no step."""
        if run.returncode == 0:
            return
        end = next((e for e in run.events if e.get("event") == "apply_end"), {})
        blocked = self.blocked()
        if not (run.returncode == 1 and blocked and end.get("failed") == 0
                and end.get("blocked") == len(blocked)):  # fmt: skip
            raise ChaosError(f"apply failed (exit {run.returncode}): {_failure(run)}")

    def _stop(self, step: dict[str, Any]) -> dict[str, Any]:
        if step.get("fill"):
            self._write(step["fill"])
        slow = step.get("slow")
        if slow:
            self.lab.read_delay(slow[0], int(slow[1]), int(slow[2]))
        power = {name: self.power(name) for name in VMS}
        try:
            run = self.apply(
                stop=(step["signal"], step["at"], step["after_ms"] / 1000, step.get("on"))
            )
        finally:
            if slow:
                self.lab.read_errors(slow[0], int(slow[1]), None)
        outcome: dict[str, Any] = {"returncode": run.returncode, "stopped": run.stopped}
        if run.stopped is None:  # the point never came: the apply ran to its end
            self.completed(run)
            return {**outcome, **self.check(plan=False)}
        if "Traceback" in run.stderr:
            raise ChaosError(f"a stopped apply printed a traceback:\n{run.stderr[-2000:]}")
        ended = (0, 130, 1) if self.blocked() else (0, 130)  # 1: it ended, with VMs blocked
        if step["signal"] == "SIGINT" and run.returncode not in ended:
            raise ChaosError(f"Ctrl-C ended apply with exit {run.returncode}: {_failure(run)}")
        if run.returncode != 0 and step["signal"] == "SIGINT":
            self.check_power(power)
        return outcome

    def _write_after_snapshot(self, name: str) -> None:
        """A guest write landing while the apply copies from the VM's snapshot: not in it."""
        if self.modes[name] != "replicate" or self.power(name) != "poweredOn":
            return
        disk = _vm(name).disks[0]
        self.lab.write(name, disk.key, 8 * MiB - 4096, 3 * MiB)

    # -- apply ---------------------------------------------------------------------------------

    def apply(
        self,
        *,
        stop: tuple[str, str, float, str | None] | None = None,
        after_snapshot: Callable[[str], None] | None = None,
    ) -> ApplyRun:
        """`ferry apply --json` on the seed's spec and state. `stop`: (signal, point, delay, on) —
        the signal goes to the apply's process group `delay` s after the first event matching
        the point (and, when `on` names a volume address, about that volume). `after_snapshot(vm)`
        runs once a VM's snapshot is taken. Afterwards each volume a sync completed for (its
        record's last_sync changed) expects the digest of this apply's start (no write reaches a
        VM before its snapshot)."""
        self.applies += 1
        before = {_sync_of(r) for r in self._records().values()}
        blocked = {self.names[name] for name in self.blocked()}
        at_start = self.live_digests()
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "apply", str(self.spec()), "--auto-approve",
             "--json", "--state", str(self.state)],
            cwd=ROOT,
            env={**os.environ, **self.lab.env(), "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
                 "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal's job
        )  # fmt: skip
        run = self._follow(proc, stop, after_snapshot)
        name = f"apply-{self.applies:02d}"
        (self.log_dir / f"{name}.jsonl").write_text(
            "".join(json.dumps(e) + "\n" for e in run.events)
        )
        (self.log_dir / f"{name}.stderr").write_text(run.stderr)
        # a sync is (volume, time): a record moved to a new address (a rename) is not a new one
        for address, record in self._records().items():
            if address in at_start and record.get("last_sync") and _sync_of(record) not in before:
                if Address.parse(address).name in blocked:
                    raise ChaosError(f"{address}: synced though its VM was blocked")
                self.expected[address] = at_start[address]
        return run

    def _follow(
        self,
        proc: subprocess.Popen[str],
        stop: tuple[str, str, float, str | None] | None,
        after_snapshot: Callable[[str], None] | None,
    ) -> ApplyRun:
        assert proc.stdout is not None and proc.stderr is not None
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
        reader.start()
        timer = threading.Timer(APPLY_TIMEOUT, lambda: _signal(proc, signal.SIGKILL))
        timer.start()
        events: list[dict[str, Any]] = []
        stopped = None
        try:
            for line in proc.stdout:
                with suppress(json.JSONDecodeError):
                    events.append(json.loads(line))
                event = events[-1] if events else {}
                taken = _snapshot_taken(event)
                if taken and after_snapshot is not None:
                    after_snapshot(self._estate_name(taken))
                if stop is not None and stopped is None and _matches(event, stop[1], stop[3]):
                    time.sleep(stop[2])
                    _signal(proc, signal.Signals[stop[0]])
                    stopped = f"{stop[0]} at {stop[1]}"
            proc.wait(timeout=120)
        finally:
            timer.cancel()
            reader.join(timeout=10)
        if proc.returncode == -signal.SIGKILL and stopped is None:
            raise ChaosError(f"apply did not end within {APPLY_TIMEOUT:.0f} s")
        return ApplyRun(proc.returncode, events, "".join(err), stopped)

    def _estate_name(self, vm_name: str) -> str:
        return next((e for e, n in self.names.items() if n == vm_name), vm_name)

    def _records(self) -> dict[str, Any]:
        return records(self.state) if self.state.exists() else {}

    # -- the oracle ----------------------------------------------------------------------------

    def check(self, *, plan: bool = True) -> dict[str, Any]:
        """After an apply that completed: the oracle (module docstring); `plan`: also the
        no-op check (a plan costs 10-30 s on the lab). Raises ChaosError."""
        found = self._records()
        conn = self.lab.openstack("ferry-lab")
        problems: list[str] = []
        for name in VMS:
            problems += self._check_volumes(name, found, conn)
            problems += self._check_cutover(name, found, conn)
        problems += self._check_ferry_snapshots()
        noops = self._check_plan(problems) if plan else None
        if problems:
            raise ChaosError("; ".join(problems))
        return {"no_op_vms": noops}

    def _check_volumes(self, name: str, found: dict[str, Any], conn: Any) -> list[str]:
        vm, problems = _vm(name), []
        ours = [
            v
            for v in conn.block_storage.volumes(details=True)
            if (v.metadata or {}).get("ferry_vm") == vm.instance_uuid
        ]
        recorded = {}
        for disk in vm.disks:
            address = self.address(name, disk.key)
            record = found.get(address)
            if address not in self.expected and name in self.blocked():
                if record is not None and record.get("volume_id"):  # an interrupted copy's
                    recorded[address] = record["volume_id"]
                continue  # no sync completed: the plan refused the VM since
            if record is None or not record.get("volume_id"):
                problems.append(f"{address}: no volume recorded after a completed apply")
                continue
            recorded[address] = record["volume_id"]
            want = self.expected.get(address)
            if want is None:
                problems.append(f"{address}: recorded but no sync of it was seen")
                continue
            volume, size = (
                volume_file(self.lab, record["volume_id"]),
                self.capacity[(name, disk.key)],
            )
            if not volume.exists():
                problems.append(f"{address}: volume {record['volume_id']} is gone")
                continue
            if volume.stat().st_size < size:
                problems.append(
                    f"{address}: volume {record['volume_id']} ({volume.stat().st_size} bytes) is "
                    f"smaller than the disk ({size} bytes)"
                )
            got = content_digest(volume, size)
            if got != want:
                problems.append(
                    f"{address}: volume {record['volume_id']} sha256 {got[:12]} differs from the "
                    f"source at its last sync's snapshot {want[:12]}"
                )
        if sorted(v.id for v in ours) != sorted(recorded.values()):
            problems.append(
                f"vm.{name}: volumes with ferry_vm {sorted(v.id for v in ours)} are not the "
                f"recorded ones {sorted(recorded.values())}"
            )
        return problems

    def _check_cutover(self, name: str, found: dict[str, Any], conn: Any) -> list[str]:
        vm, problems = _vm(name), []
        servers = [
            s
            for s in conn.compute.servers()
            if (s.metadata or {}).get("ferry_vm") == vm.instance_uuid
        ]
        macs = [
            p.mac_address for p in conn.network.ports() if p.mac_address in {n.mac for n in vm.nics}
        ]
        if len(macs) != len(set(macs)):
            problems.append(f"vm.{name}: a source MAC has more than one port: {sorted(macs)}")
        if self.modes[name] != "cutover":
            if servers:
                problems.append(f"vm.{name}: a server exists though the VM is replicated")
            if macs:  # ports are made for a cutover; back to replicate, the plan removes them
                problems.append(f"vm.{name}: ports with source MACs {macs} though replicated")
            if any(a.startswith(f"vm.{self.names[name]}.conversion") for a in found):
                problems.append(f"vm.{name}: a conversion record though replicated")
            return problems
        if len(servers) != 1 or servers[0].status != "ACTIVE":
            return [*problems, f"vm.{name}: {len(servers)} server(s), want one ACTIVE"]
        attached = sorted(
            a.get("id") or a.get("volumeId") for a in servers[0].attached_volumes or []
        )
        volumes = sorted(
            found[self.address(name, d.key)]["volume_id"]
            for d in vm.disks
            if self.address(name, d.key) in found
        )
        if attached != volumes:
            problems.append(f"vm.{name}: server volumes {attached} are not the recorded {volumes}")
        if self.power(name) != "poweredOff":
            problems.append(f"vm.{name}: cut over but its source is still powered on")
        if sorted(macs) != sorted(n.mac for n in vm.nics):
            problems.append(f"vm.{name}: ports {sorted(macs)} are not one per source MAC")
        return problems

    def _check_ferry_snapshots(self) -> list[str]:
        problems = []
        for name in VMS:
            tree = fetch_property(self.si, self.ref(name), "snapshot")
            left = [t.name for t in _walk(tree) if str(t.name).startswith("ferry-")]
            if left:
                problems.append(f"vm.{name}: ferry snapshot(s) left in vCenter: {left}")
        conn = self.lab.openstack("ferry-lab")
        recorded = {r.get("volume_id") for r in self._records().values()}
        kept = [s.id for s in conn.block_storage.snapshots() if s.volume_id in recorded]
        if kept:
            problems.append(f"Cinder snapshot(s) of ferry's volumes left: {kept}")
        return problems

    def _check_plan(self, problems: list[str]) -> list[str]:
        """A plan that does nothing to a VM's disks is true: each volume equals the disk now."""
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "plan", str(self.spec()), "--json",
             "--state", str(self.state)],
            cwd=ROOT, env={**os.environ, **self.lab.env(), "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        try:
            plan = json.loads(done.stdout)
        except json.JSONDecodeError:
            problems.append(f"plan after a completed apply failed: {done.stderr.strip()[-500:]}")
            return []
        now, noops = self.live_digests(), []
        for name in VMS:
            prefix = f"vm.{self.names[name]}."
            acting = [
                c
                for c in plan.get("changes", [])
                if c["address"].startswith(prefix) and c["action"] != "no-op"
            ]
            if acting or self.modes[name] == "cutover" or name in self.blocked():
                continue  # a blocked VM's plan is a refusal, not a no-op
            noops.append(name)
            for disk in _vm(name).disks:
                address = self.address(name, disk.key)
                if self.expected.get(address) != now[address]:
                    problems.append(
                        f"{address}: the plan is a no-op but the volume differs from the disk now"
                    )
        return noops

    def check_power(self, before: dict[str, str]) -> None:
        """After an apply that failed or was stopped: no source left off by ferry."""
        conn = self.lab.openstack("ferry-lab")
        for name in VMS:
            uuid = _vm(name).instance_uuid
            served = any((s.metadata or {}).get("ferry_vm") == uuid for s in conn.compute.servers())
            if before[name] == "poweredOn" and not served and self.power(name) != "poweredOn":
                raise ChaosError(f"vm.{name}: a stopped apply left the source powered off")

    # -- planted faults (never drawn; the harness's own test) ---------------------------------

    def _corrupt(self, step: dict[str, Any]) -> dict[str, Any]:
        """Flip one byte of a recorded volume, outside ferry (what a skipped write would leave)."""
        record = self._records()[self.address(step["vm"], step["disk"])]
        path = volume_file(self.lab, record["volume_id"])
        with path.open("r+b") as f:
            f.seek(step["offset"])
            byte = f.read(1) or b"\0"
            f.seek(step["offset"])
            f.write(bytes([byte[0] ^ 0xFF]))
        return {"volume": record["volume_id"]}


def _sync_of(record: dict[str, Any]) -> tuple[Any, Any]:
    """What identifies a volume record's last sync: its volume and the sync's time."""
    return record.get("volume_id"), (record.get("last_sync") or {}).get("at")


BLOCK = MiB
ZERO_BLOCK = bytes(BLOCK)


def content_digest(path: Path, length: int) -> str:
    """sha256 of a sparse file's first `length` bytes as content, not layout: over each 1 MiB
    block that is not all zeros, its index and bytes (a hole and written zeros hash alike). Equal
    content gives equal digests, as file_digest does, but only the data is read: file_digest
    reads and hashes every zero of the 5 GiB of lab disks, ~20 s a check on two busy cores."""
    h = hashlib.sha256(f"{length}\n".encode())
    blocks = sorted(
        {
            index
            for offset, n in lab_disks.data_extents(path)
            if offset < length
            for index in range(offset // BLOCK, (min(offset + n, length) - 1) // BLOCK + 1)
        }
    )
    with path.open("rb") as f:
        for index in blocks:
            f.seek(index * BLOCK)
            data = f.read(min(BLOCK, length - index * BLOCK))
            if data.strip(b"\0"):
                h.update(index.to_bytes(8, "big") + data)
    return h.hexdigest()


def _walk(info: Any) -> Iterator[Any]:
    stack = list(info.rootSnapshotList) if info is not None else []
    while stack:
        tree = stack.pop()
        yield tree
        stack.extend(tree.childSnapshotList or [])


SNAPSHOT_TAKEN = re.compile(r"^vm\.(?P<vm>.+): snapshot \S+ taken$")


def _snapshot_taken(event: dict[str, Any]) -> str | None:
    if event.get("event") != "step":
        return None
    found = SNAPSHOT_TAKEN.match(str(event.get("message", "")))
    return found.group("vm") if found else None


def _matches(event: dict[str, Any], point: str, on: str | None = None) -> bool:
    """Whether `event` (an apply --json event) is where a stop at `point` lands; `on`: only
    events about that address."""
    kind, message = event.get("event"), str(event.get("message", ""))
    if on is not None and event.get("address", on) != on:
        return False
    if point == "snapshot":
        return _snapshot_taken(event) is not None
    if point == "copy":
        return kind == "copy" and event.get("done", 0) > 0
    if point == "copy_mid":
        return kind == "copy" and 2 * event.get("done", 0) >= event.get("total", 1) > 0
    if point == "verify":  # the copy's last bytes are in: verify (or the record) comes next
        return kind == "copy" and event.get("done") == event.get("total", -1)
    if point == "synced":
        return kind == "synced"
    if point == "source_off":
        return kind == "source_off"
    if point == "protect":
        return kind == "step" and message.endswith("protected")
    if point in ("conversion", "port"):
        return kind == "node_start" and event.get("kind") == point
    if point == "boot":
        return kind == "node_start" and event.get("kind") == "server"
    raise ValueError(point)


def _signal(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _failure(run: ApplyRun) -> str:
    failed = [f"{e['address']}: {e['error']}" for e in run.events if e.get("outcome") == "failed"]
    return "; ".join(failed) or run.stderr.strip()[-800:]


# -- seeds ------------------------------------------------------------------------------------


@dataclass
class SeedResult:
    seed: int
    steps: list[dict[str, Any]]
    failed_at: int | None = None
    error: str = ""
    seconds: float = 0.0
    log_dir: Path = Path()

    @property
    def ok(self) -> bool:
        return self.failed_at is None


def run_steps(lab: Lab, steps: list[dict[str, Any]], seed: int, log_dir: Path) -> SeedResult:
    """Run `steps` from a clean destination and restored VMs; the VMs are restored after too."""
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "steps.json").write_text(json.dumps({"seed": seed, "steps": steps}, indent=1) + "\n")
    (log_dir / "steps.log.jsonl").unlink(missing_ok=True)
    result = SeedResult(seed, steps, log_dir=log_dir)
    began = time.monotonic()
    with session(lab.vcenter_target()) as si:
        restore(lab, si)
        rng = random.Random(seed)
        verify = {name: rng.choice(("true", "false", "changed")) for name in VMS}
        world = World(lab, si, log_dir, seed, verify)
        try:
            for index, step in enumerate(steps):
                try:
                    world.run(index, step)
                except ChaosError as exc:
                    result.failed_at, result.error = index, str(exc)
                    break
                except Exception as exc:  # the harness or the lab broke: a failure too, with why
                    result.failed_at = index
                    result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                    break
        finally:
            restore(lab, si, world.names)
    result.seconds = round(time.monotonic() - began, 1)
    return result


def restore(lab: Lab, si: Any, names: dict[str, str] | None = None) -> None:
    """The chaos VMs as the estate has them (name, CBT, power, no snapshot, no fault) and nothing
    of theirs in the cloud: servers, ports with their MACs, Cinder snapshots, volumes."""
    by_uuid = {
        o.props.get("config.instanceUuid"): o
        for o in retrieve(si, vim.VirtualMachine, ["config.instanceUuid", "name"])
    }
    for name in VMS:
        vm = _vm(name)
        obj = by_uuid[vm.instance_uuid]
        if obj.props["name"] != name:
            wait_task(si, obj.ref.Rename_Task(name), "rename back")
        if fetch_property(si, obj.ref, "config.changeTrackingEnabled") is not vm.cbt:
            spec = vim.vm.ConfigSpec(changeTrackingEnabled=vm.cbt)
            wait_task(si, obj.ref.ReconfigVM_Task(spec), "CBT back")
        for tree in list(_walk(fetch_property(si, obj.ref, "snapshot"))):
            if str(tree.name).startswith(("chaos-", "ferry-")):
                with suppress(Exception):
                    remove_snapshot(si, tree.snapshot)
        _shrink_back(lab, si, vm, obj.ref)
        if vm.powered_on:
            power_on(si, obj.ref)
        elif power_state(si, obj.ref) != "poweredOff":
            wait_task(si, obj.ref.PowerOffVM_Task(), "power off")
        for disk in vm.disks:
            lab.read_errors(name, disk.key, None)
    _clean_cloud(lab)


def _shrink_back(lab: Lab, si: Any, vm: LabVM, ref: Any) -> None:
    """A disk the run grew back to the estate's capacity (vSphere cannot shrink a disk; the lab's
    simulator can, and the other tests compare volumes with disks of the estate's size)."""
    for device in fetch_property(si, ref, "config.hardware.device"):
        disk = vm.disk(int(device.key)) if isinstance(device, vim.vm.device.VirtualDisk) else None
        if disk is None or int(device.capacityInBytes or 0) == disk.capacity:
            continue
        device.capacityInBytes, device.capacityInKB = disk.capacity, disk.capacity // 1024
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=device)
        wait_task(si, ref.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), "shrink")
        os.truncate(lab_disks.live_path(lab.disks, vm, disk.key), disk.capacity)


def _clean_cloud(lab: Lab) -> None:
    conn = lab.openstack("ferry-lab")
    uuids = {_vm(n).instance_uuid for n in VMS}
    macs = {nic.mac for n in VMS for nic in _vm(n).nics}
    for server in conn.compute.servers():
        if (server.metadata or {}).get("ferry_vm") in uuids:
            conn.compute.delete_server(server.id)
            conn.compute.wait_for_delete(server, wait=120, interval=0.25)
    for port in conn.network.ports():
        if port.mac_address in macs:
            conn.network.delete_port(port.id)
    ours = [
        v
        for v in conn.block_storage.volumes(details=True)
        if (v.metadata or {}).get("ferry_vm") in uuids
    ]
    for snapshot in conn.block_storage.snapshots():
        if snapshot.volume_id in {v.id for v in ours}:
            conn.block_storage.delete_snapshot(snapshot.id)
            conn.block_storage.wait_for_delete(snapshot, wait=120, interval=0.25)
    for volume in ours:
        for attachment in volume.attachments or []:
            with suppress(Exception):
                conn.compute.delete_volume_attachment(attachment["server_id"], volume.id)
        _wait_detached(conn, volume.id)
        conn.block_storage.delete_volume(volume.id)
        conn.block_storage.wait_for_delete(volume, wait=120, interval=0.25)


def _wait_detached(conn: Any, volume_id: str) -> None:
    deadline = time.monotonic() + 120
    while conn.block_storage.get_volume(volume_id).status not in ("available", "error"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"volume {volume_id} stays attached")
        time.sleep(1)


def minimise(lab: Lab, result: SeedResult, log_dir: Path) -> SeedResult:
    """Drop steps (one at a time, then the tail after the failure) while the run still fails with
    the same first words; returns the smallest failing run found."""
    signature = result.error.split(":")[0]
    steps = result.steps[: (result.failed_at or 0) + 1]
    if steps and steps[-1]["op"] not in ("apply", "stop"):
        steps.append({"op": "apply"})
    best, index, attempt = result, 0, 0
    while index < len(steps) - 1:
        trial = steps[:index] + steps[index + 1 :]
        attempt += 1
        got = run_steps(lab, trial, result.seed, log_dir / f"minimise-{attempt:03d}")
        print(f"minimise: without step {index} ({steps[index]['op']}): "
              f"{'fails' if not got.ok else 'passes'}", flush=True)  # fmt: skip
        if not got.ok and got.error.split(":")[0] == signature:
            steps, best = trial, got
        else:
            index += 1
    return best


@contextmanager
def lab_for_run() -> Iterator[Lab]:
    """The lab in $FERRY_TEST_LAB_DIR (running: used as is), else a new one for this run."""
    if os.environ.get("FERRY_TEST_LAB_DIR"):
        yield Lab(Path(os.environ["FERRY_TEST_LAB_DIR"]))
        return
    lab = Lab(Path(tempfile.mkdtemp(prefix="ferry-chaos-lab-")))
    print(f"chaos: starting a lab in {lab.root}", flush=True)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def describe(result: SeedResult) -> str:
    if result.ok:
        return f"seed {result.seed}: ok, {len(result.steps)} steps in {result.seconds} s"
    step = result.steps[result.failed_at or 0]
    return (
        f"seed {result.seed}: FAILED at step {result.failed_at} {json.dumps(step)} after "
        f"{result.seconds} s: {result.error.strip()}\n  steps and logs: {result.log_dir}"
    )


def _write(vm: str, disk: int, offset: int, length: int, seed: int) -> dict[str, Any]:
    return {"op": "write", "vm": vm, "disk": disk, "offset": offset, "length": length, "seed": seed}


# Failing runs the chaos run found (or issue 12's faults in its terms), minimised: seed (it picks
# each VM's `verify`; 0: verify false), steps, the fault they showed, and the dedicated lab test
# CI runs for the same fault. They run in `scripts/chaos --regressions` (~7 min of lab time:
# 415 s for the 6 on a quiet lab), not in CI, where each would repeat its dedicated test;
# tests/unit/test_chaos_regressions.py checks that every covering test exists.
REGRESSIONS: dict[str, tuple[int, list[dict[str, Any]], str, str]] = {
    "resumed-full-copy-loses-a-write-below-its-checkpoint": (
        0,
        [
            _write("web01", 2000, 1024 * MiB, 96 * MiB, 1),
            _write("web01", 2000, 1152 * MiB, 96 * MiB, 2),
            {"op": "stop", "full": True, "signal": "SIGINT", "at": "copy",
             "on": "vm.web01.disk[2000]", "after_ms": 5000, "slow": ["web01", 2000, 1000]},
            _write("web01", 2000, 0, MiB, 99),
            {"op": "apply", "plan": True},
        ],
        "fault 1: a resumed full copy loses guest writes below its checkpoint",
        "tests/integration/test_resume.py::"
        "test_a_copy_resumed_from_a_newer_snapshot_copies_what_changed_below_its_checkpoint",
    ),
    "rename-deletes-the-replica": (
        0,
        [
            {"op": "apply", "plan": False},
            {"op": "rename", "vm": "web01", "renamed": True},
            {"op": "apply", "plan": True},
        ],
        "fault 4: a rename plans deletes and adopts of the same volumes",
        "tests/integration/test_identity.py::"
        "test_a_renamed_vm_moves_its_records_and_keeps_its_volumes",
    ),
    "grown-disk-is-ignored": (
        0,
        [
            {"op": "apply", "plan": False},
            {"op": "grow", "vm": "web01", "disk": 2001, "by": 1024 * MiB},
            {"op": "apply", "plan": True},
        ],
        "fault 5: a grown disk is not extended",
        "tests/integration/test_source_changes.py::"
        "test_a_grown_disk_extends_its_volume_and_copies_in_full",
    ),
    "ctrl-c-after-the-power-off-leaves-the-source-off": (
        0,
        [
            {"op": "apply", "plan": False},
            {"op": "cutover", "vm": "web01"},
            {"op": "stop", "signal": "SIGINT", "at": "source_off", "after_ms": 0},
            {"op": "apply", "plan": True},
        ],
        "fault 9: Ctrl-C after the source's power-off leaves it off without a word",
        "tests/integration/test_cutover_safety.py::"
        "test_ctrl_c_after_the_power_off_powers_the_source_back_on",
    ),
    "interrupted-apply-leaves-its-snapshot": (
        0,
        [
            {"op": "apply", "plan": False},
            _write("build-old", 2000, 64 * MiB, MiB, 3),
            {"op": "stop", "signal": "SIGKILL", "at": "synced", "on": "vm.build-old.disk[2000]",
             "after_ms": 0},
            {"op": "apply", "plan": True},
        ],
        "seed 8103: kill -9 after build-old synced leaves ferry-build-old on it (nothing else "
        "planned for it: the plan said 'No changes' while the snapshot stayed)",
        "tests/integration/test_stun_points.py::"
        "test_a_powered_off_vm_in_sync_is_a_no_op_until_a_snapshot_is_left_on_it",
    ),
    "volume-of-a-killed-apply-adopted-empty": (
        0,
        [
            {"op": "stop", "full": True, "signal": "SIGKILL", "at": "synced", "on": None,
             "after_ms": 200, "slow": ["build-old", 2000, 200], "fill": None},
            {"op": "apply", "plan": True},
        ],
        "seed 8103: kill -9 after web01's disk 2001 volume was created, before its record: the "
        "next apply adopted it without a copy and said 'Apply complete' with an empty replica",
        # the kill lands inside the volume's create only sometimes (the seed's run did, a replay
        # did not): planner case adopt-volume-never-synced is the deterministic cover
        "tests/unit/test_planner_cases.py::test_case",
    ),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (from --seed on)")
    parser.add_argument("--steps", type=int, default=12, help="steps per seed")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument(
        "--ops",
        default=None,
        help=f"operations (default $CHAOS_OPS or 'default'; all: {','.join(ALL_OPS)})",
    )
    parser.add_argument("--replay", type=Path, help="a steps.json to run instead of seeds")
    parser.add_argument(
        "--regressions", action="store_true", help="run the failing runs found so far instead"
    )
    parser.add_argument("--minimise", action="store_true", help="shrink a failing run's steps")
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        ops = enabled_ops(args.ops)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="ferry-chaos-"))
    first = args.seed if args.seed is not None else random.randrange(1_000_000)
    print(f"chaos: ops {','.join(ops)}; logs in {log_dir}", flush=True)
    failed = 0
    with lab_for_run() as lab:
        if args.replay:
            data = json.loads(args.replay.read_text())
            runs = [(f"seed-{data['seed']}", int(data["seed"]), list(data["steps"]))]
        elif args.regressions:  # each in a directory (and a state) of its own
            runs = [(name, seed, steps) for name, (seed, steps, _, _) in REGRESSIONS.items()]
        else:
            seeds = range(first, first + args.seeds)
            runs = [(f"seed-{s}", s, generate(s, args.steps, ops)) for s in seeds]
        for name, seed, steps in runs:
            result = run_steps(lab, steps, seed, log_dir / name)
            label = "" if name == f"seed-{seed}" else f"{name}: "
            print(f"{label}{describe(result)}", flush=True)
            if not result.ok:
                failed += 1
                if args.minimise:
                    small = minimise(lab, result, log_dir / name)
                    print(f"minimised to {len(small.steps)} steps: {json.dumps(small.steps)}")
    print(f"chaos: {len(runs) - failed} of {len(runs)} run(s) passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
