"""Refresh: the planner's only I/O. Reads the source inventory, the destination cloud and the
recorded state; everything after this is pure."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import NoStateError
from engine.model.observed import Destination, Inventory
from engine.model.state import INSTANCE_UUID, VCENTER_OFF_AT, State
from engine.planner.checks import mapped_networks
from engine.planner.selection import select, wanted_tags
from engine.providers.openstack.read import (
    connect_destination,
    fetch_destination,
    parse_destination,
)
from engine.providers.vsphere.inventory import fetch_inventory, parse_inventory
from engine.providers.vsphere.power import powered_on_since
from engine.providers.vsphere.read import ObjectProps
from engine.providers.vsphere.session import session, target_from_spec
from engine.providers.vsphere.tags import tagged_vms
from engine.statestore import StateLocation

EMPTY_STATE = State(format_version=1, lineage="", serial=0, resources={})


@dataclass(frozen=True)
class Observed:
    inventory: Inventory
    destination: Destination
    state: State


def read_state(location: StateLocation) -> State:
    """The recorded state; an empty one when there is none yet (plan never creates it)."""
    if not location.exists():
        return EMPTY_STATE
    try:
        store = location.open(create=False)
    except NoStateError:
        return EMPTY_STATE
    try:
        return store.read()
    finally:
        store.close()


def refresh(spec: dict[str, Any], location: StateLocation, env: Mapping[str, str]) -> Observed:
    """Source inventory (devices only for the spec's VMs), destination (with output: image,
    ferry's Glance images and the image metadata of the volumes made from them) and recorded
    state."""

    target = target_from_spec(spec["source"]["vcenter"], dict(env))
    tags = tagged_vms(target, wanted_tags(spec))

    def selected(objects: list[ObjectProps]) -> list[Any]:
        inventory = replace(parse_inventory(objects), tags=tags)
        chosen = {vm.moref for vm, _ in select(spec, inventory).vms}
        return [o.ref for o in objects if o.ref._moId in chosen]

    state = read_state(location)
    with session(target) as si:
        objects = fetch_inventory(si, devices_for=selected)
        inventory = replace(parse_inventory(objects), tags=tags)
        inventory = power_on_events(si, inventory, objects, state)
    destination = spec["destination"]
    conn = connect_destination(destination)
    raw = fetch_destination(conn, mapped_networks(spec), images=recorded_images(spec, state))
    observed = replace(
        parse_destination(raw),
        work_dir_free=work_dir_free(destination),
        work_dir_files=work_dir_files(destination),
    )
    return Observed(inventory, observed, state)


def power_on_events(
    si: Any, inventory: Inventory, objects: list[ObjectProps], state: State
) -> Inventory:
    """The inventory with `powered_on_at` read for each VM ferry powered off for a cutover
    (its conversion record's `vcenter_off_at`, vCenter's clock) that is off now and has a disk
    without a changeId (CBT off): vCenter's power-on events since are the one record that it
    ran (break-it 12f F4: the apply refused the unconfirmed server on those events while the
    plan, reading changeIds only, was clean). One QueryEvents per such VM. Raises
    VSphereError."""
    since = {
        str(r.attributes.get(INSTANCE_UUID) or "").lower(): str(r.attributes[VCENTER_OFF_AT])
        for r in state.resources.values()
        if r.kind == "conversion" and r.attributes.get(VCENTER_OFF_AT)
    }
    refs = {o.ref._moId: o.ref for o in objects}
    vms = []
    for vm in inventory.vms:
        off = since.get((vm.instance_uuid or "").lower())
        blind = any(d.change_id is None for d in vm.disks)
        if off and blind and vm.power_state == "poweredOff" and vm.moref in refs:
            ons = powered_on_since(si, refs[vm.moref], datetime.fromisoformat(off))
            vms.append(replace(vm, powered_on_at=tuple(on.timestamp() for on in ons)))
        else:
            vms.append(vm)
    return replace(inventory, vms=tuple(vms))


def recorded_images(spec: Mapping[str, Any], state: State) -> list[str] | None:
    """The ids of the Glance images the state records, with output: image (refresh then lists
    ferry's images in Glance: compared with what the plan sets, drift); None with output: volume
    (Glance is not read)."""
    if spec["destination"].get("output") != "image":
        return None
    return sorted(
        str(r.attributes["image_id"])
        for r in state.resources.values()
        if r.kind == "image" and r.attributes.get("image_id")
    )


def work_dir_files(destination: Mapping[str, Any]) -> frozenset[str] | None:
    """The disk files in the spec's work_dir with output: image (`<work_dir>/<lineage>/*/disk-
    *.raw`, and an older ferry's `<work_dir>/*/disk-*.raw`, as engine.planner.diff.image.
    disk_path names them, normalised as a Path: `./w/x` is `w/x`); None with output: volume or
    when the directory cannot be listed (validation named why)."""
    if destination.get("output") != "image" or not destination.get("work_dir"):
        return None
    root = Path(str(destination["work_dir"]))
    try:  # as the executor records a file's path: str(Path(...)), no resolving
        found = [*root.glob("*/disk-*.raw"), *root.glob("*/*/disk-*.raw")]
        return frozenset(str(p) for p in found if p.is_file())
    except OSError:
        return None


def work_dir_free(destination: Mapping[str, Any]) -> int | None:
    """Free bytes (for an unprivileged user) of the spec's work_dir with output: image; None
    with output: volume or when it cannot be read (validation already named why)."""
    if destination.get("output") != "image" or not destination.get("work_dir"):
        return None
    try:
        return shutil.disk_usage(str(destination["work_dir"])).free
    except OSError:
        return None
