"""From a validated spec and what refresh observed to the desired model (pure: no I/O).

Selects the spec's VMs in the source inventory, merges defaults with per-VM overrides, names
the OpenStack objects (sanitized, unique), maps disks to volumes and NICs to ports, chooses
flavors, and raises concerns: everything a reviewer must see before approving the plan.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from engine.diagnostics import Diagnostic
from engine.model.desired import (
    Concern,
    ConcernLevel,
    DesiredPort,
    DesiredVM,
    DesiredVolume,
    FlavorChoice,
    ImageOutput,
)
from engine.model.observed import (
    CONSOLIDATE,
    Destination,
    Flavor,
    Inventory,
    SourceDisk,
    SourceSnapshot,
    SourceVM,
    consolidation_needed,
    others_advice,
)
from engine.planner import image_properties as nova
from engine.planner.selection import select
from engine.spec.validate import reader_of
from engine.units import GiB

MAX_NAME = 63
KNOWN_GUESTS = (
    "rhel",
    "centos",
    "rocky",
    "alma",
    "oracle",
    "ubuntu",
    "debian",
    "sles",
    "suse",
    "windows",
    "fedora",
    "other3xLinux",
    "other4xLinux",
    "other5xLinux",
)

Spec = dict[str, Any]


def verify_scope(setting: bool | str) -> str:
    """The spec's verify (true, false or "changed") as the plan says it: full, off or changed."""
    if setting is True:
        return "full"
    return "changed" if setting == "changed" else "off"


def settings_for(spec: Spec, entry: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by the VM entry; maps merge key by key."""
    merged = dict(spec.get("defaults") or {})
    for key, value in entry.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key.endswith("_map"):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


# -- names --------------------------------------------------------------------------------------


def sanitize(name: str) -> str:
    """An OpenStack-friendly name: ASCII letters, digits, '.', '_', '-', at most 63 characters."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_name)
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-._")
    return cleaned[:MAX_NAME].rstrip("-._")


def target_names(vms: Iterable[tuple[SourceVM, dict[str, Any]]]) -> dict[str, str]:
    """moref → unique target name; colliding names get the instance UUID's last 8 hex digits."""
    wanted = {}
    for vm, entry in vms:
        base = entry.get("target_name") or sanitize(vm.name) or "vm"
        wanted[vm.moref] = (base, (vm.instance_uuid or vm.moref).replace("-", "")[-8:])
    counts = Counter(base for base, _ in wanted.values())
    return {
        moref: (base if counts[base] == 1 else f"{base[: MAX_NAME - 9]}-{suffix}")
        for moref, (base, suffix) in wanted.items()
    }


# -- flavors --------------------------------------------------------------------------------------


def choose_flavor(
    setting: Any, vm: SourceVM, target: str, flavors: Iterable[Flavor], root_gib: int = 0
) -> tuple[FlavorChoice, list[Concern]]:
    """The VM's flavor by the spec's `flavor` setting (auto | create | {name: ...}) and the
    concerns it raises. `root_gib` (GiB): with boot: image the boot disk's size, the flavor's
    root disk must hold it (Nova refuses a smaller one, and a zero-disk flavor for an image
    boot by a non-admin); 0: the server boots from a volume, the flavor's disk does not
    matter."""
    cpus, ram = vm.cpus or 1, vm.memory_mb or 1
    if setting == "create":
        flavor = Flavor(f"ferry-{target}"[:MAX_NAME], cpus, ram, disk=root_gib)
        disk = f", {root_gib} GiB root disk (boot: image)" if root_gib else ""
        return FlavorChoice(flavor, True, f"created for the VM: {cpus} vCPU, {ram} MiB{disk}"), []
    available = list(flavors)
    if isinstance(setting, dict):
        return _named_flavor(str(setting["name"]), available, cpus, ram, root_gib)
    fitting = [f for f in available if f.vcpus >= cpus and f.ram_mb >= ram and f.disk >= root_gib]
    disk = f" and ≥ {root_gib} GiB root disk (boot: image)" if root_gib else ""
    if not fitting:
        return FlavorChoice(None, False, "none fits"), [
            _error(
                "no-flavor",
                f"no flavor has ≥ {cpus} vCPU and ≥ {ram} MiB RAM{disk} "
                "(use flavor: create or name one)",
            )
        ]
    best = min(fitting, key=lambda f: (f.vcpus - cpus, f.ram_mb - ram, f.disk - root_gib, f.name))
    spare = f", {best.disk - root_gib} GiB" if root_gib else ""
    return FlavorChoice(
        best,
        False,
        f"smallest flavor with ≥ {cpus} vCPU and ≥ {ram} MiB{disk} "
        f"(spare: {best.vcpus - cpus} vCPU, {best.ram_mb - ram} MiB{spare})",
    ), []


def _named_flavor(
    name: str, available: list[Flavor], cpus: int, ram: int, root_gib: int
) -> tuple[FlavorChoice, list[Concern]]:
    """The flavor the spec names: missing is an error, smaller than the VM a warning, a root
    disk smaller than the boot disk (boot: image, `root_gib` > 0) an error."""
    named = next((f for f in available if f.name == name), None)
    if named is None:
        return FlavorChoice(None, False, "named flavor missing"), [
            _error("no-flavor", f"flavor {name!r} does not exist")
        ]
    concerns = []
    if named.vcpus < cpus or named.ram_mb < ram:
        concerns.append(
            _warning(
                "small-flavor",
                f"flavor {named.name} ({named.vcpus} vCPU, "
                f"{named.ram_mb} MiB) is smaller than the VM ({cpus} vCPU, "
                f"{ram} MiB)",
            )
        )
    if named.disk < root_gib:
        why = (
            "a zero-disk flavor: Nova boots an image on it only for an admin"
            if named.disk == 0
            else f"Nova refuses an image larger than the flavor's {named.disk} GiB"
        )
        concerns.append(
            _error(
                "flavor-root-disk-too-small",
                f"flavor {named.name} has a {named.disk} GiB root disk and the boot disk "
                f"(boot: image) needs {root_gib} GiB ({why}): name a flavor with a larger "
                "disk, flavor: auto, or boot: volume",
            )
        )
    return FlavorChoice(named, False, "named in the spec"), concerns


# -- disks and NICs -------------------------------------------------------------------------------


def _error(code: str, message: str) -> Concern:
    return Concern(ConcernLevel.ERROR, code, message)


def _warning(code: str, message: str) -> Concern:
    return Concern(ConcernLevel.WARNING, code, message)


def _info(code: str, message: str) -> Concern:
    return Concern(ConcernLevel.INFO, code, message)


def disk_concerns(disk: SourceDisk) -> list[Concern]:
    out = []
    if disk.mode.startswith("independent"):
        out.append(
            _error(
                "independent-disk",
                f"disk {disk.key} is independent: snapshots do not "
                "include it, so it cannot be copied consistently",
            )
        )
    if disk.rdm is not None:
        out.append(_error("rdm-disk", f"disk {disk.key} is a raw device mapping ({disk.rdm})"))
    if disk.sharing not in (None, "sharingNone"):
        out.append(_error("shared-disk", f"disk {disk.key} is shared ({disk.sharing})"))
    if disk.encrypted:
        out.append(_error("encrypted-disk", f"disk {disk.key} is encrypted by vSphere"))
    if disk.capacity <= 0:
        out.append(_error("empty-disk", f"disk {disk.key} reports no capacity"))
    return out


def volumes_for(
    vm: SourceVM, settings: dict[str, Any], destination: Destination
) -> tuple[list[DesiredVolume], list[Concern]]:
    type_map: dict[str, Any] = settings.get("volume_type_map") or {}
    disks = sorted(vm.disks, key=lambda d: (d.controller_key, d.unit_number or 0, d.key))
    volumes, concerns = [], []
    missing: dict[str, list[str]] = {}  # volume type: its disks (one concern per type)
    for i, disk in enumerate(disks):
        concerns += disk_concerns(disk)
        entry = type_map.get(disk.datastore or "")
        vtype = entry.get("name") if isinstance(entry, dict) else entry
        # a type named by its id (Cinder takes either) is planned, counted and shown by its
        # name: Cinder's per-type quota keys use names (break-it 12k M3: "does not exist")
        vtype = destination.volume_type_ids.get(vtype, vtype) if vtype is not None else None
        if vtype is None:
            concerns.append(
                _warning(
                    "unmapped-datastore",
                    f"datastore {disk.datastore} of disk "
                    f"{disk.key} is not in volume_type_map: default volume type",
                )
            )
        elif vtype not in destination.volume_types:
            missing.setdefault(vtype, []).append(str(disk.key))
        volumes.append(
            DesiredVolume(
                disk.key,
                max(1, math.ceil(disk.capacity / GiB)),
                disk.capacity,
                vtype,
                i == 0,
                disk.datastore,
                unzeroed(vtype, entry, destination),
            )
        )
    concerns += [
        _error(
            "missing-volume-type",
            f"volume type {vtype!r} does not exist (disk{'s' if len(keys) > 1 else ''} "
            f"{', '.join(keys)})",
        )
        for vtype, keys in missing.items()
    ]
    return volumes, concerns


def unzeroed(vtype: str | None, entry: Any, destination: Destination) -> str | None:
    """Why new volumes of `vtype` may not read as zeros (their holes must be written), or None
    when they do: the type has encryption (LUKS reads random bytes where nothing was written),
    or the spec's volume_type_map says `zeroed: false`."""
    if vtype is not None and vtype in destination.encrypted_volume_types:
        return f"volume type {vtype!r} is encrypted"
    if isinstance(entry, dict) and entry.get("zeroed") is False:
        return f"volume_type_map says volume type {vtype!r} is not zeroed"
    return None


def ports_for(
    vm: SourceVM, settings: dict[str, Any], destination: Destination
) -> tuple[list[DesiredPort], list[Concern]]:
    network_map: dict[str, dict[str, Any]] = settings.get("network_map") or {}
    overrides = {str(n["mac"]).lower(): n for n in settings.get("nics") or []}
    ports, concerns = [], []
    for i, nic in enumerate(sorted(vm.nics, key=lambda n: n.key)):
        mac = nic.mac or ""
        override = overrides.get(mac.lower(), {})
        target = network_map.get(nic.portgroup or "") or network_map.get(nic.portgroup_key or "")
        network = override.get("network") or (target or {}).get("network")
        if network is None:
            concerns.append(
                _error(
                    "unmapped-portgroup",
                    f"NIC {i} ({mac}) is on portgroup "
                    f"{nic.portgroup!r}, which network_map does not map",
                )
            )
        elif not _network_exists(network, destination) and not (target or {}).get("create"):
            concerns.append(
                _error(
                    "missing-network",
                    f"network {network!r} (NIC {i}) does not exist: map the portgroup to an "
                    "existing network, or add create: {cidr: ...} so ferry makes it",
                )
            )
        if not mac:
            concerns.append(_error("no-mac", f"NIC {i} has no MAC address"))
        ports.append(
            DesiredPort(
                i,
                mac,
                network,
                override.get("subnet") or (target or {}).get("subnet"),
                override.get("ip"),
                nic.portgroup,
                (target or {}).get("create") if network == (target or {}).get("network") else None,
                nic_key=nic.key,
                portgroup_key=nic.portgroup_key,
            )
        )
    return ports, concerns


def _network_exists(ref: str, destination: Destination) -> bool:
    """A network named `ref`, or with id `ref` (network_map takes either)."""
    return ref in destination.networks or ref in destination.network_names


READERS = ("vddk", "https", "datastore_path")


# backings the base-extent readers read (flat) or that disk_concerns refuses anyway (rdm)
FLAT_OR_REFUSED = frozenset({None, "flat", "flat_delta", "rdm"})
# datastores that keep disks as objects, not -flat.vmdk files (summary.type → its name)
OBJECT_DATASTORES = {"vsan": "vSAN", "VVOL": "vVols"}


def _who(reader: str) -> str:
    return "the https reader" if reader == "https" else reader


def _not_flat(disk: SourceDisk, reader: str) -> Concern | None:
    """A disk whose bytes are not one flat extent file (sparse, SE sparse, a raw disk; any disk
    on a vSAN or vVols datastore, which has no -flat.vmdk file: break-it 15b N4): the https and
    datastore_path readers would read the wrong file or none, so the VM is refused. None for
    a disk they can read."""
    kind = OBJECT_DATASTORES.get(disk.datastore_type or "")
    if kind is not None:
        why = f"disk {disk.key} is on {kind} datastore {disk.datastore}, which has no flat extent"
    elif disk.backing not in FLAT_OR_REFUSED:
        why = f"disk {disk.key}'s backing is {disk.backing}, not a flat extent"
    else:
        return None
    return _error(
        "https-reader-non-flat-disk" if reader == "https" else "datastore-path-non-flat-disk",
        f"{why} (-flat.vmdk): {_who(reader)} reads flat extents only; read this VM with "
        "source.reader: vddk",
    )


def _consolidation_needed(keys: list[int], reader: str) -> Concern:
    """Disks that run on more delta disks than the VM has snapshots (`consolidation_needed`: a
    failed backup's leftover, vSphere's "consolidation needed"), with or without snapshots of
    ferry's on top (break-it 15b N2): the base-extent readers would read a -delta.vmdk (sparse
    format) as the disk (break-it 15 F2), so the VM is refused."""
    disks = ", ".join(map(str, keys))
    return _error(
        "consolidation-needed",
        f"disk(s) {disks} run on more delta disks than the VM has snapshots (vSphere: "
        f"consolidation needed): {_who(reader)} would read a delta file as the disk; "
        f"{CONSOLIDATE}",
    )


def source_concerns(vm: SourceVM, spec: Spec, lineage: str) -> list[Concern]:
    """What the way disks are read asks of a VM: the https reader and a datastore mount read
    the disk's base extent, which is the VM's disk at ferry's snapshot only when that snapshot
    is the VM's only one (the lab's files are each snapshot's own copy: no such limit; another
    ferry state's snapshot froze it as much as a backup's: only this state of `lineage` may
    remove its leftovers first) and no
    delta disk no snapshot owns sits above it (consolidation_needed), and only when the disk
    is a flat one (not sparse, SE sparse or a raw disk, nor on a vSAN or vVols datastore)."""
    reader = reader_of(spec)
    source = spec.get("source") or {}
    base_extent = reader == "https" or (reader == "datastore_path" and not source.get("lab_dir"))
    if not base_extent:
        return []
    out = [found for disk in vm.disks if (found := _not_flat(disk, reader)) is not None]
    not_own = [s for s in vm.snapshots if not s.left_by(lineage)]
    other = [s.name for s in not_own]
    users = "; consolidate (delete) them first" if any(not s.ferry_made for s in not_own) else ""
    theirs = others_advice([s.name for s in not_own if s.ferry_made])
    deltas = [d.key for d in vm.disks if consolidation_needed(d.deltas, len(vm.snapshots))]
    if deltas:
        out.append(_consolidation_needed(deltas, reader))
    if not other:
        return out
    if reader == "https":
        return [
            *out,
            _error(
                "snapshot-with-https-reader",
                f"has snapshot(s) {', '.join(other)}: the https reader reads the base disk, "
                f"which is older than the VM's current state{users}{', or' if users else ';'} "
                f"read this VM with source.reader: vddk{theirs}",
            ),
        ]
    return [
        *out,
        _error(
            "snapshot-with-datastore-path",
            f"has snapshot(s) {', '.join(other)}: datastore_path reads the base disk, which is "
            f"older than the VM's current state{users}{theirs}",
        ),
    ]


SNAPSHOT_REFUSALS = frozenset({"snapshot-with-https-reader", "snapshot-with-datastore-path"})


def _refusals_replace_advice(concerns: list[Concern], refusals: list[Concern]) -> list[Concern]:
    """`concerns` then `refusals` (source_concerns), without the warning on a VM's own
    snapshots when the reader refuses them: the warning's advice (consolidate before the
    cutover, the current state is migrated) is untrue for a base-extent reader, which blocks
    the VM now (break-it 15 F7: two contradicting lines for one snapshot)."""
    if any(c.code in SNAPSHOT_REFUSALS for c in refusals):
        concerns = [c for c in concerns if c.code != "existing-snapshot"]
    return concerns + refusals


def _own_snapshots(other: list[SourceSnapshot], mode: str) -> str:
    """What a VM's own snapshots (not ferry's) mean in its mode: ferry migrates the disks'
    current state (its snapshot is taken on top of theirs; the readers of a base extent,
    https and datastore_path, refuse such a VM: source_concerns), never the snapshots. In
    replicate mode nothing is lost yet and the warning says to consolidate before the
    cutover; in cutover/cold mode this apply's server boots the current state and the
    snapshots stay on the source."""
    names = f"has {len(other)} snapshot(s) of its own ({', '.join(s.name for s in other)})"
    if mode in ("cutover", "cold"):
        return (
            f"{names}: they are not migrated: the server boots the disks' current state "
            "only, and the snapshots stay on the source VM"
        )
    return (
        f"{names}: they are not migrated (OpenStack gets the disks' current state only); "
        "while replicating nothing is lost yet: consolidate (delete) them before the cutover "
        "once their states are not needed"
    )


def _other_states_snapshots(vm: SourceVM, lineage: str) -> list[Concern]:
    """A warning naming the snapshots another ferry state took (their lineage is not
    `lineage`, this state's): never removed here, its apply may be reading them (break-it
    16b F5: a second state's apply removed a rehearsal's snapshot under its running copy)."""
    theirs = [s for s in vm.snapshots if s.ferry_made and not s.left_by(lineage)]
    if not theirs:
        return []
    names = ", ".join(f"{s.name} ({s.moref}, ferry state {s.lineage})" for s in theirs)
    return [
        _warning(
            "other-state-snapshot",
            f"snapshot(s) {names} taken by another ferry state: left alone (an apply of that "
            "state may be copying from it); that state's next plan/apply removes it if its "
            "apply was interrupted",
        )
    ]


def vm_concerns(vm: SourceVM, settings: dict[str, Any], lineage: str) -> list[Concern]:
    """The VM's concerns from its inventory and spec settings; `lineage`: this state's (which
    ferry snapshots are its own leftovers)."""
    out = []
    mode = settings.get("mode", "replicate")
    if not vm.cbt:
        out.append(
            _info("cbt-enable", "CBT is off: ferry will enable it (enable_cbt)")
            if settings.get("enable_cbt")
            else _warning("cbt-off", "CBT is off: every sync copies the whole disk")
        )
    own = [s for s in vm.snapshots if s.left_by(lineage)]
    other = [s for s in vm.snapshots if not s.ferry_made]
    if other:
        out.append(_warning("existing-snapshot", _own_snapshots(other, mode)))
    out += _other_states_snapshots(vm, lineage)
    if own:
        out.append(
            _info(
                "leftover-snapshot",
                f"{len(own)} snapshot(s) left by an interrupted apply "
                f"({', '.join(s.name for s in own)}): ferry removes them",
            )
        )
    if not any(vm.guest_id and vm.guest_id.startswith(g) for g in KNOWN_GUESTS):
        out.append(_warning("unknown-guest", f"guest {vm.guest_id!r} is not one virt-v2v converts"))
    if (
        vm.guest_id
        and vm.guest_id.startswith("windows")
        and mode in ("cutover", "cold")
        and settings.get("convert", True)
    ):
        out.append(
            _info(
                "virtio-win",
                "Windows: the conversion host needs virtio-win 0.1.240 or newer "
                "(checked before converting)",
            )
        )
    if vm.firmware == "efi":
        converted = bool(settings.get("convert", True))
        uefi = {
            k: v
            for k, v in nova.image_properties(vm, converted=converted).items()
            if k in ("hw_firmware_type", "hw_machine_type", "os_secure_boot")
        }
        boot = "Secure Boot not reported by vCenter"
        if vm.secure_boot is not None:
            boot = "Secure Boot on" if vm.secure_boot else "Secure Boot off"
        out.append(
            _info("uefi", f"UEFI firmware ({boot}): the boot disk gets {nova.describe(uefi)}")
        )
    out += nova.unconverted_concerns(vm, converted=bool(settings.get("convert", True)), mode=mode)
    if vm.power_state == "poweredOff" and mode == "replicate":
        out.append(_info("powered-off", "powered off: the copy is already consistent"))
    graceful = (settings.get("power_off") or {}).get("policy", "graceful") == "graceful"
    if (
        mode == "cutover"
        and graceful
        and vm.tools != "guestToolsRunning"
        and vm.power_state == "poweredOn"
    ):
        out.append(_warning("no-tools", _no_tools(settings)))
    return out


def image_output(spec: Spec, lineage: str) -> ImageOutput | None:
    """The spec's destination.output: image settings (defaults filled in) for the state of
    `lineage` (its folder under work_dir); None for volumes."""
    destination = spec.get("destination") or {}
    if destination.get("output", "volume") != "image":
        return None
    image = destination.get("image") or {}
    return ImageOutput(
        work_dir=str(destination.get("work_dir", "")),
        disk_format=str(image.get("disk_format", "qcow2")),
        boot=str(image.get("boot", "volume")),
        lineage=lineage,
    )


def desired(
    spec: Spec, inventory: Inventory, destination: Destination, lineage: str
) -> tuple[list[DesiredVM], list[Diagnostic]]:
    """Every selected VM's desired state with its concerns, plus selection errors; `lineage`:
    the state's (which of ferry's snapshots on a VM are its own)."""
    selection = select(spec, inventory)
    names = target_names(selection.vms)
    by_name = Counter(vm.name for vm in inventory.vms)
    out = []
    for vm, entry in selection.vms:
        settings = settings_for(spec, entry)
        target = names[vm.moref]
        volumes, volume_concerns = volumes_for(vm, settings, destination)
        image = image_output(spec, lineage)
        root_gib = volumes[0].size_gib if image and image.boot == "image" and volumes else 0
        flavor, flavor_concerns = choose_flavor(
            settings.get("flavor", "auto"), vm, target, destination.flavors, root_gib
        )
        ports, port_concerns = ports_for(vm, settings, destination)
        concerns = vm_concerns(vm, settings, lineage)
        concerns += flavor_concerns + volume_concerns + port_concerns
        concerns = _refusals_replace_advice(concerns, source_concerns(vm, spec, lineage))
        if by_name[vm.name] > 1 and "name" in entry:
            concerns.append(
                _error(
                    "name-collision",
                    f"{by_name[vm.name]} VMs are named "
                    f"{vm.name!r}: select this one by instance_uuid",
                )
            )
        out.append(
            DesiredVM(
                name=vm.name,
                source=vm,
                mode=settings.get("mode", "replicate"),
                target_name=target,
                flavor=flavor,
                volumes=tuple(volumes),
                ports=tuple(ports),
                security_groups=tuple(settings.get("security_groups") or ()),
                key_pair=settings.get("key_pair"),
                verify=verify_scope(settings.get("verify", False)),
                convert=bool(settings.get("convert", True)),
                enable_cbt=bool(settings.get("enable_cbt", False)),
                max_downtime=(settings.get("limits") or {}).get("max_downtime"),
                power_off=dict(settings.get("power_off") or {}),
                firstboot=tuple((settings.get("conversion") or {}).get("firstboot") or ()),
                debug=bool((settings.get("conversion") or {}).get("debug", False)),
                reader=reader_of(spec),
                availability_zone=settings.get("availability_zone"),
                conversion_host=settings.get("conversion_host"),
                image=image,
                concerns=tuple(concerns),
            )
        )
    return _unique_addresses(out), selection.diagnostics


def _unique_addresses(vms: list[DesiredVM]) -> list[DesiredVM]:
    """VMs sharing a name get their target name as address name, so addresses stay unique."""
    counts = Counter(vm.name for vm in vms)
    return [vm if counts[vm.name] == 1 else replace(vm, name=vm.target_name) for vm in vms]


def _no_tools(settings: Mapping[str, Any]) -> str:
    """What a graceful power-off does to a guest whose VMware Tools do not run: vSphere refuses
    ShutdownGuest (ToolsUnavailable), so power_off.force_after powers it off hard at once, and
    without it the cutover fails at the power-off with the VM on (break-it 12o L4: the plan
    said "will time out then power off")."""
    if (settings.get("power_off") or {}).get("force_after"):
        return (
            "VMware Tools not running: a graceful shutdown cannot run (vSphere refuses it), so "
            "the source is powered off hard at once (power_off.force_after)"
        )
    return (
        "VMware Tools not running: a graceful shutdown cannot run (vSphere refuses it) and the "
        "spec does not allow a hard power-off (power_off.force_after): the cutover fails at "
        "the power-off, the VM stays on"
    )
