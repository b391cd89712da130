"""Data-driven planner cases: each folder of tests/cases holds case.yaml (spec, source inventory,
destination, prior state) and expected.json (the plan, minus volatile fields, and the exit code).

UPDATE_CASES=1 rewrites expected.json from the current planner: review the diff before committing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from engine.addresses import Address
from engine.cli.plan import exit_code
from engine.errors import UserError
from engine.model.observed import (
    Destination,
    Flavor,
    Inventory,
    ObservedAttachment,
    ObservedImage,
    ObservedImageVolume,
    ObservedPort,
    ObservedServer,
    ObservedSubnet,
    ObservedVolume,
    Quota,
    SourceDisk,
    SourceNic,
    SourceSnapshot,
    SourceVM,
)
from engine.model.plan import Action, Plan
from engine.model.state import ResourceRecord, State, Status
from engine.planner.make import make_plan
from engine.planner.planfile import from_json, to_json
from engine.spec.validate import validate_text

CASES = Path(__file__).parents[1] / "cases"
GiB = 1024**3


def hydrate_vm(v: dict[str, Any]) -> SourceVM:
    digest = hashlib.sha256(v["name"].encode()).hexdigest()
    made = f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
    uuid = v.get("uuid", made)
    disks = tuple(
        SourceDisk(
            key=d["key"],
            label=f"Hard disk {i + 1}",
            capacity=int(d["gib"] * GiB),
            datastore=d.get("datastore", "ds1"),
            file="[ds] x.vmdk",
            thin=d.get("thin", True),
            mode=d.get("mode", "persistent"),
            sharing=d.get("sharing"),
            rdm=d.get("rdm"),
            controller_key=1000,
            unit_number=i,
            change_id=d.get("change_id"),
            allocated=int(d["allocated_mib"] * 2**20) if "allocated_mib" in d else None,
            backing=d.get("backing"),
            controller=d.get("controller"),
            # delta disks below it: flat_delta runs on one unless the case says how many
            deltas=d.get("deltas", 1 if d.get("backing") == "flat_delta" else 0),
            datastore_type=d.get("datastore_type"),
        )
        for i, d in enumerate(v.get("disks", []))
    )
    nics = tuple(
        SourceNic(
            key=4000 + i,
            label=f"Network adapter {i + 1}",
            mac=n["mac"],
            adapter=n.get("adapter", "VirtualVmxnet3"),
            portgroup=n.get("portgroup"),
            portgroup_key=None,
            distributed=n.get("distributed", False),
            connected=True,
        )
        for i, n in enumerate(v.get("nics", []))
    )
    snaps = tuple(  # a name, or {name, description, moref}
        SourceSnapshot(f"snapshot-{i}", s, None, None)
        if isinstance(s, str)
        else SourceSnapshot(
            s.get("moref", f"snapshot-{i}"), s["name"], None, None, s.get("description", "")
        )
        for i, s in enumerate(v.get("snapshots", []))
    )
    return SourceVM(
        moref=v.get("moref", f"vm-{int(digest[:6], 16) % 100000}"),
        name=v["name"],
        instance_uuid=uuid,
        bios_uuid=None,
        folder=v.get("folder", "/DC0/vm"),
        host="esx1",
        guest_id=v.get("guest_id", "rhel9_64Guest"),
        guest_name=None,
        firmware=v.get("firmware", "bios"),
        cpus=v.get("cpus", 2),
        memory_mb=v.get("memory_mb", 4096),
        power_state=v.get("power", "poweredOn"),
        tools=v.get("tools", "guestToolsRunning"),
        cbt=v.get("cbt", True),
        template=False,
        disks=disks,
        nics=nics,
        snapshots=snaps,
        secure_boot=v.get("secure_boot"),
        powered_on_at=tuple(float(t) for t in v.get("powered_on_at", ())),
        guest_state=v.get("guest"),
    )


def hydrate(case: dict[str, Any]) -> tuple[Inventory, Destination, State]:
    vms = tuple(hydrate_vm(v) for v in case["inventory"])
    by_name = {vm.name: vm.moref for vm in vms}
    tags = {
        tag: frozenset(by_name[v["name"]] for v in case["inventory"] if tag in v.get("tags", []))
        for tag in {t for v in case["inventory"] for t in v.get("tags", [])}
    }
    inventory = Inventory(vms, (), (), (), tags, tuple(case.get("datacenters", ())))
    recorded = state(case.get("state", {}))
    return inventory, made_by_this_ferry(case.get("destination", {}), recorded), recorded


def made_by_this_ferry(d: dict[str, Any], recorded: State) -> Destination:
    """A case's destination whose volumes, volumes made from images, images and ports that the
    state records carry the state's lineage unless the case gives theirs (`lineage`, or an
    image's `ferry_state` property; `lineage: null`: none, made by an older ferry): this ferry
    stamps it on every object it makes, so a recorded object without one is an older ferry's,
    which the plan labels (engine.planner.diff.lineage)."""
    ids = {
        str(r.attributes.get(k))
        for r in recorded.resources.values()
        for k in ("volume_id", "image_id", "port_id")
        if r.attributes.get(k)
    }

    def stamp(found: dict[str, Any]) -> dict[str, Any]:
        if found.get("id") not in ids or "lineage" in found:
            return found
        if "properties" in found:  # an image: its lineage is its ferry_state property
            if "ferry_state" in found["properties"]:
                return found
            return {**found, "properties": {**found["properties"], "ferry_state": recorded.lineage}}
        return {**found, "lineage": recorded.lineage}

    d = dict(d)
    for key in ("volumes", "volumes_from_images", "images", "ports"):
        if key in d:
            d[key] = [stamp(v) for v in d[key]]
    if "images" in d:  # `lineage: null` on an image: none (its properties hold no ferry_state)
        d["images"] = [{k: v for k, v in i.items() if k != "lineage"} for i in d["images"]]
    return destination(d)


def destination(d: dict[str, Any]) -> Destination:
    """A case's destination. Networks are named, their id is their name unless `network_ids`
    gives one (name → id, or a list of ids: several networks of that name); ports name their
    network by id; key_pairs, roles and default_volume_type (the project's default volume
    type's name) are unknown (not checked) unless given; `servers` are ferry's, `other_servers`
    anyone's (by name);
    `images` (Glance's, output: image), `image_volumes` (volume id → image metadata),
    `volumes_from_images` (the volumes ferry made from its images: what a lost state adopts) and
    `volume_ids` (every volume of the project, by id), `snapshot_ids` (every Cinder snapshot,
    by id), `newer_snapshots` (snapshot id -> its volume's snapshots taken after it) and
    `foreign_snapshots` (volume id -> its snapshots not ferry's) are not read unless given."""
    ids = {n: d.get("network_ids", {}).get(n, n) for n in d.get("networks", [])}
    names = {
        i: n for n, found in ids.items() for i in ([found] if isinstance(found, str) else found)
    }
    servers = tuple(ObservedServer(**v) for v in d.get("servers", []))
    return Destination(
        flavors=tuple(
            Flavor(f["name"], f["vcpus"], f["ram_mb"], disk=f.get("disk", 0))
            for f in d.get("flavors", [])
        ),
        networks=frozenset(d.get("networks", [])),
        volume_types=frozenset(d.get("volume_types", [])),
        security_groups=frozenset(d.get("security_groups", [])),
        encrypted_volume_types=frozenset(d.get("encrypted_volume_types", [])),
        default_volume_type=d.get("default_volume_type"),
        volume_type_ids=dict(d.get("volume_type_ids", {})),
        volumes=tuple(observed_volume(v) for v in d.get("volumes", [])),
        servers=servers,
        ports=tuple(
            ObservedPort(**{**p, "ips": tuple(p.get("ips", ()))}) for p in d.get("ports", [])
        ),
        quotas={k: Quota(**v) for k, v in d.get("quotas", {}).items()},
        server_names=frozenset([*(s.name for s in servers), *d.get("other_servers", [])]),
        network_names=names,
        subnets=tuple(
            ObservedSubnet(**{**s, "pools": tuple(map(tuple, s.get("pools", ())))})
            for s in d.get("subnets", [])
        ),
        key_pairs=frozenset(d["key_pairs"]) if "key_pairs" in d else None,
        roles=frozenset(d["roles"]) if "roles" in d else None,
        work_dir_free=int(d["work_dir_free_mib"] * 2**20) if "work_dir_free_mib" in d else None,
        work_dir_files=frozenset(d["work_dir_files"]) if "work_dir_files" in d else None,
        images=observed_images(d["images"]) if "images" in d else None,
        image_volumes=d.get("image_volumes"),
        volumes_from_images=(
            tuple(
                ObservedImageVolume(**{**v, "server_ids": tuple(v.get("server_ids", ()))})
                for v in d["volumes_from_images"]
            )
            if "volumes_from_images" in d
            else None
        ),
        volume_ids=frozenset(d["volume_ids"]) if "volume_ids" in d else None,
        snapshot_ids=frozenset(d["snapshot_ids"]) if "snapshot_ids" in d else None,
        newer_snapshots=(
            {k: tuple(v) for k, v in d["newer_snapshots"].items()}
            if "newer_snapshots" in d
            else None
        ),
        foreign_snapshots=(
            {k: tuple(v) for k, v in d["foreign_snapshots"].items()}
            if "foreign_snapshots" in d
            else None
        ),
    )


def observed_images(listed: list[dict[str, Any]]) -> dict[str, ObservedImage]:
    """A case's Glance images (`properties` as Glance holds them; its lineage their
    ferry_state), by id; status active unless given."""
    found = (
        ObservedImage(
            i["id"],
            i.get("status", "active"),
            i.get("properties", {}).get("ferry_vm_uuid"),
            int(i["properties"]["ferry_disk_key"])
            if "ferry_disk_key" in i.get("properties", {})
            else None,
            {k: str(v) for k, v in i.get("properties", {}).items()},
            i.get("properties", {}).get("ferry_state"),
        )
        for i in listed
    )
    return {i.id: i for i in found}


def observed_volume(v: dict[str, Any]) -> ObservedVolume:
    """A case's volume; `attachments` (the attachments API's rows) only when given."""
    found = v.get("attachments")
    attachments = None if found is None else tuple(ObservedAttachment(**a) for a in found)
    return ObservedVolume(**{**v, "attachments": attachments})


def state(s: dict[str, Any]) -> State:
    records = {
        a: ResourceRecord(a, r["kind"], Status(r.get("status", "ready")), r.get("attributes", {}))
        for a, r in (s.get("resources") or {}).items()
    }
    return State(1, "case-lineage", s.get("serial", 0), records)


def run_case(folder: Path) -> dict[str, Any]:
    case = yaml.safe_load((folder / "case.yaml").read_text())
    loaded = validate_text(yaml.safe_dump(case["spec"]), str(folder / "case.yaml"), {})
    assert loaded.diagnostics == [], [d.render() for d in loaded.diagnostics]
    inventory, destination, state = hydrate(case)
    plan = make_plan(
        loaded.data,
        inventory,
        destination,
        state,
        destroy=case.get("destroy", False),
        now=case.get("now"),
        verify=case.get("verify", False),
        adopt_lineages=tuple(case.get("adopt_lineages", ())),
    )
    result = to_json(plan)
    Draft202012Validator(PLAN_SCHEMA).validate(result)
    assert from_json(json.loads(json.dumps(result))) == plan  # a saved plan reads back whole
    for volatile in ("created_at", "spec_digest"):
        result.pop(volatile)
    result["exit_code"] = exit_code(plan, detailed=True)
    return result


@pytest.mark.parametrize(
    "folder", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name
)
def test_case(folder: Path) -> None:
    got = run_case(folder)
    expected_file = folder / "expected.json"
    if os.environ.get("UPDATE_CASES"):
        expected_file.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert expected_file.exists(), f"{expected_file} missing: UPDATE_CASES=1, then review it"
    assert got == json.loads(expected_file.read_text())


PLAN_SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "plan.v1.json").read_text())


def _plan_of(folder: str, targets: tuple[Address, ...]) -> Plan:
    case = yaml.safe_load((CASES / folder / "case.yaml").read_text())
    loaded = validate_text(yaml.safe_dump(case["spec"]), folder, {})
    inventory, destination, state = hydrate(case)
    return make_plan(loaded.data, inventory, destination, state, targets=targets)


def test_a_target_typo_is_an_error_with_the_nearest_address() -> None:
    """`--target vm.web0l` used to plan nothing and say "No changes" (issue 13, item 3)."""
    with pytest.raises(UserError, match=r"--target vm\.web0l .*did you mean vm\.web01\?"):
        _plan_of("first-delta", (Address.parse("vm.web0l"),))
    with pytest.raises(UserError, match=r"did you mean vm\.web01\.disk\[2001\]\?"):
        _plan_of("first-delta", (Address.parse("vm.web01.disk[2009]"),))
    with pytest.raises(UserError, match=r"see `ferry plan` for the addresses"):
        _plan_of("first-delta", (Address.parse("flavor.zzzzzzzzzzzz"),))
    kept = _plan_of("first-delta", (Address.parse("vm.web01"),))
    assert kept.changes and all(c.address.startswith("vm.web01") for c in kept.changes)


def test_a_target_of_a_renamed_vm_names_its_new_address() -> None:
    """Break-it 12i F1: db01 renamed db01-renamed in vCenter; `--target vm.db01` (the wave's
    runbook) was "known" by its old records, selected none of the changes (all at the new
    name) and said "No changes: the destination matches the spec" with the replica behind, or
    with a cutover that never ran. Now one line naming where it moved; the new name plans."""
    for old, new in (("vm.db01", "vm.db01-renamed"), ("vm.db01.disk[2000]", None)):
        hint = new or "vm.db01-renamed.disk[2000]"
        with pytest.raises(
            UserError, match=rf"has moved to vm\.db01-renamed .*target {re.escape(hint)}$"
        ):
            _plan_of("renamed-vm", (Address.parse(old),))
    kept = _plan_of("renamed-vm", (Address.parse("vm.db01-renamed"),))
    assert any(c.action is Action.MOVE for c in kept.changes)


def test_a_target_inside_a_blocked_vm_plans_nothing_and_shows_its_error() -> None:
    """Break-it 16d L2: `--target vm.web01.volume[2000]` of a VM blocked beside another state's
    server said "is not a VM of the spec nor a known address" (its changes are not planned, so
    the address was unknown). Now the plan shows the VM's block; a typo elsewhere still errs."""
    target = Address.parse("vm.web01.volume[2000]")
    plan = _plan_of("image-unlabeled-beside-server", (target,))
    (vm,) = [v for v in plan.vms if v.name == "web01"]
    assert vm.blocked and any(c.code == "unlabeled-beside-server" for c in vm.concerns)
    assert not [c for c in plan.changes if c.address.startswith("vm.web01")]
    with pytest.raises(UserError, match=r"not a VM of the spec nor a known address"):
        _plan_of("image-unlabeled-beside-server", (Address.parse("vm.web01x.volume[2000]"),))


def test_a_targeted_plan_counts_only_the_targeted_vms_against_the_quota() -> None:
    """Break-it 12k: `--target vm.db01` was blocked for quota by web01's demand (listed before
    it), which this plan does not apply; targeted alone, db01's 4 GiB fit the 10 GiB left.
    Untargeted, the same case still blocks db01 after web01."""
    whole = _plan_of("quota-short", ())
    assert any(c.code == "quota" for v in whole.vms if v.name == "db01" for c in v.concerns)
    plan = _plan_of("quota-short", (Address.parse("vm.db01"),))
    (db01,) = [v for v in plan.vms if v.name == "db01"]
    assert not db01.blocked, db01.concerns
    assert plan.changes and all(c.address.startswith("vm.db01") for c in plan.changes)
