"""Which VMs of the source inventory a spec selects (pure: no I/O): its `vms` entries by name,
instance UUID, moref or pattern (name glob, folder, tag) less its `exclude` entries, within the
datacenter the spec names (found by name anywhere in the folder tree, or by path), each VM taken
by the most exact entry; entries that select nothing or overlap are diagnostics. `Lookup` keeps
what the lookup could see, so records of a VM it did not find are left untouched."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.diagnostics import Diagnostic, Severity
from engine.model.observed import (
    Inventory,
    SourceVM,
)

Spec = dict[str, Any]


@dataclass
class Selection:
    """The spec's VMs found in the inventory, and problems selecting them."""

    vms: list[tuple[SourceVM, dict[str, Any]]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _matches(
    entry: dict[str, Any], vm: SourceVM, tags: Mapping[str, frozenset[str]] | None = None
) -> bool:
    if "name" in entry:
        return vm.name == str(entry["name"])
    if "instance_uuid" in entry:
        return (vm.instance_uuid or "").lower() == str(entry["instance_uuid"]).lower()
    if "moref" in entry:
        return vm.moref == str(entry["moref"])
    pattern = entry.get("pattern") or {}
    if "name" in pattern and not fnmatch.fnmatchcase(vm.name, pattern["name"]):
        return False
    folder = pattern.get("folder")
    if folder and not (vm.folder or "").rstrip("/").startswith(folder.rstrip("/")):
        return False
    tag = pattern.get("tag")
    return not tag or vm.moref in (tags or {}).get(tag, frozenset())


@dataclass(frozen=True)
class Lookup:
    """What the spec's VM lookup could see (pure data): tells a recorded VM the spec dropped
    from one the lookup did not find, whose records must be left untouched."""

    uuids: frozenset[str]  # instance UUIDs (lower case) of the VMs the spec could select
    names: frozenset[str]  # their names
    entries: tuple[dict[str, Any], ...] = ()  # the spec's vms entries
    excluded: tuple[dict[str, Any], ...] = ()  # its exclude entries
    complete: bool = True  # False: the lookup could not run (its datacenter was not found)

    def visible(self, name: str, uuid: str | None) -> bool:
        """The VM is one the spec could select (by its UUID when known, else by name)."""
        return uuid.lower() in self.uuids if uuid else name in self.names

    def selecting(self, name: str, uuid: str | None) -> tuple[int, bool] | None:
        """For a recorded VM no desired VM claims: the first vms entry that selects it (index,
        True) or may select it (index, False: a folder or tag pattern, a moref, a UUID not
        recorded); None when the spec no longer lists it, or excludes it. A VM the lookup sees
        (renamed, say) is still selected only by an exact `name:` of its recorded name: the
        patterns were tried on it and did not select it."""
        if any(_names(e, name, uuid) is True for e in self.excluded):
            return None
        seen = self.visible(name, uuid)
        for i, entry in enumerate(self.entries):
            says = _names(entry, name, uuid)
            if seen and "name" not in entry:
                continue
            if says is not False:
                return i, says is True
        return None


def _names(entry: dict[str, Any], name: str, uuid: str | None) -> bool | None:
    """Whether a spec entry selects a VM known only by its recorded name and UUID: True, False,
    or None when that cannot be told (folder, tag, moref, or a UUID not recorded)."""
    if "name" in entry:
        return str(entry["name"]) == name
    if "instance_uuid" in entry:
        return None if uuid is None else str(entry["instance_uuid"]).lower() == uuid.lower()
    if "moref" in entry:
        return None
    pattern = entry.get("pattern") or {}
    if "name" in pattern and not fnmatch.fnmatchcase(name, pattern["name"]):
        return False
    return None if pattern.get("folder") or pattern.get("tag") else True


def lookup(spec: Spec, inventory: Inventory) -> Lookup:
    """What the spec's VM lookup sees in the inventory (nothing when its datacenter is not
    found), for the diff's recorded VMs."""
    datacenter = ((spec.get("source") or {}).get("vcenter") or {}).get("datacenter")
    where = datacenter_path(str(datacenter), inventory.datacenters) if datacenter else None
    seen = (
        []
        if isinstance(where, Diagnostic)
        else [vm for vm in inventory.vms if in_datacenter(vm, where)]
    )
    return Lookup(
        uuids=frozenset(vm.instance_uuid.lower() for vm in seen if vm.instance_uuid),
        names=frozenset(vm.name for vm in seen),
        entries=tuple(spec.get("vms") or []),
        excluded=tuple(spec.get("exclude") or []),
        complete=not isinstance(where, Diagnostic),
    )


def wanted_tags(spec: Spec) -> set[str]:
    """The vSphere tags the spec's patterns name (refresh reads only those)."""
    entries = [*(spec.get("vms") or []), *(spec.get("exclude") or [])]
    return {str(e["pattern"]["tag"]) for e in entries if (e.get("pattern") or {}).get("tag")}


EXACT = ("name", "instance_uuid", "moref")
SELECTS_NOTHING = "selects no VM in the inventory"  # the error of a vms entry that selects none


def select(spec: Spec, inventory: Inventory) -> Selection:
    """Spec entries → (VM, entry) in spec order; an entry that selects nothing is an error.

    A VM several entries select takes the first exact one (name, instance_uuid, moref), else
    the first pattern. Two exact entries on one VM → an error; an exact entry and a pattern whose
    settings differ, or two patterns → a warning naming the entries; an exact entry of a VM that
    `exclude` drops → a warning."""
    out = Selection()
    excluded = [e for e in spec.get("exclude") or []]
    datacenter = ((spec.get("source") or {}).get("vcenter") or {}).get("datacenter")
    where = datacenter_path(str(datacenter), inventory.datacenters) if datacenter else None
    if isinstance(where, Diagnostic):
        out.diagnostics.append(where)
        return out
    candidates = [vm for vm in inventory.vms if in_datacenter(vm, where)]
    entries = [e for e in spec.get("vms") or []]
    selectors: dict[str, list[int]] = {}  # moref → the entries selecting it, in spec order
    for i, entry in enumerate(entries):
        found = [vm for vm in candidates if _matches(entry, vm, inventory.tags)]
        if not found:
            out.diagnostics.append(
                Diagnostic(
                    Severity.ERROR,
                    f"vms[{i}] {SELECTS_NOTHING}"
                    f"{f' of datacenter {datacenter}' if datacenter else ''}: {_describe(entry)}",
                    path=("vms", i),
                )
            )
            continue
        for vm in found:
            dropped = next(
                (k for k, x in enumerate(excluded) if _matches(x, vm, inventory.tags)), None
            )
            if dropped is None:
                selectors.setdefault(vm.moref, []).append(i)
            elif _exact(entry):
                out.diagnostics.append(
                    Diagnostic(
                        Severity.WARNING,
                        f"vms[{i}] ({_describe(entry)}) selects VM {vm.name}, which "
                        f"exclude[{dropped}] ({_describe(excluded[dropped])}) drops: it is not "
                        "migrated (remove one of the two entries)",
                        path=("vms", i),
                    )
                )
    winners = {moref: _winner(found, entries) for moref, found in selectors.items()}
    by_moref = {vm.moref: vm for vm in candidates}
    out.diagnostics += _overlaps(selectors, winners, entries, by_moref)
    for i, entry in enumerate(entries):
        chosen = [by_moref[m] for m, won in winners.items() if won == i]
        if chosen:
            out.diagnostics += unmatched_overrides(i, entry, chosen)
    for i in range(len(entries)):
        out.vms += [(by_moref[m], entries[i]) for m, won in winners.items() if won == i]
    return out


def unmatched_overrides(index: int, entry: dict[str, Any], vms: list[SourceVM]) -> list[Diagnostic]:
    """Errors for the overrides of vms[index] keyed by what none of the VMs it applies to has:
    a `nics[].mac` no NIC has, a `network_map` portgroup no NIC is on, a `volume_type_map`
    datastore no disk is on (each would be silently ignored). A pattern's key must fit one of
    its VMs."""
    out = []
    whose = f"VM {vms[0].name}" if len(vms) == 1 else f"the {len(vms)} VMs vms[{index}] selects"
    macs = {(n.mac or "").lower() for vm in vms for n in vm.nics}
    for k, nic in enumerate(entry.get("nics") or []):
        if str(nic.get("mac", "")).lower() not in macs:
            out.append(
                Diagnostic(
                    Severity.ERROR,
                    f"MAC {nic.get('mac')} is no NIC of {whose} (MACs: {_listing(vms, _macs)}): "
                    "fix the MAC or remove this override",
                    path=("vms", index, "nics", k, "mac"),
                )
            )
    portgroups = {p for vm in vms for n in vm.nics for p in (n.portgroup, n.portgroup_key) if p}
    datastores = {d.datastore for vm in vms for d in vm.disks if d.datastore}
    maps = (
        ("network_map", portgroups, "portgroup {!r} is on no NIC", "portgroups", _portgroups),
        ("volume_type_map", datastores, "datastore {!r} holds no disk", "datastores", _datastores),
    )
    for section, known, what, plural, listed in maps:
        for key in entry.get(section) or {}:
            if key not in known:
                out.append(
                    Diagnostic(
                        Severity.ERROR,
                        f"{what.format(key)} of {whose} ({plural}: {_listing(vms, listed)}): "
                        "fix the name or remove this mapping",
                        path=("vms", index, section, key),
                    )
                )
    return out


def _listing(vms: list[SourceVM], values: Callable[[SourceVM], list[str]]) -> str:
    """What each VM has, for a message: 'a, b' for one VM, 'web01: a; web02: b' for several
    (at most 5 VMs listed)."""
    if len(vms) == 1:
        return ", ".join(sorted(set(values(vms[0])))) or "none"
    shown = "; ".join(
        f"{vm.name}: {', '.join(sorted(set(values(vm)))) or 'none'}" for vm in vms[:5]
    )
    return shown + (f"; +{len(vms) - 5} more" if len(vms) > 5 else "")


def _macs(vm: SourceVM) -> list[str]:
    return [n.mac or "?" for n in vm.nics]


def _portgroups(vm: SourceVM) -> list[str]:
    return [str(n.portgroup) for n in vm.nics]


def _datastores(vm: SourceVM) -> list[str]:
    return [str(d.datastore) for d in vm.disks]


def _exact(entry: dict[str, Any]) -> bool:
    return any(k in entry for k in EXACT)


def _winner(found: list[int], entries: list[dict[str, Any]]) -> int:
    """The entry whose settings a VM takes: the first exact one, else the first."""
    return next((i for i in found if _exact(entries[i])), found[0])


def _overrides(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in (*EXACT, "pattern")}


def _overlaps(
    selectors: Mapping[str, list[int]],
    winners: Mapping[str, int],
    entries: list[dict[str, Any]],
    vms: Mapping[str, SourceVM],
) -> list[Diagnostic]:
    """One diagnostic per pair of entries selecting the same VM(s): exact + exact → error;
    exact + pattern with other settings, pattern + pattern → warning (the winner applies)."""
    pairs: dict[tuple[int, int], list[str]] = {}
    for moref, found in selectors.items():
        won = winners[moref]
        for other in found:
            if other == won:
                continue
            quiet = _overrides(entries[other]) == _overrides(entries[won])
            if quiet and _exact(entries[won]) and not _exact(entries[other]):
                continue
            pairs.setdefault((won, other), []).append(vms[moref].name)
    out = []
    for (won, other), names in pairs.items():
        first, second = sorted((won, other))
        listed = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        both = (
            f"vms[{first}] ({_describe(entries[first])}) and vms[{second}] "
            f"({_describe(entries[second])}) both select VM{'s' if len(names) > 1 else ''} {listed}"
        )
        if _exact(entries[other]):
            out.append(
                Diagnostic(
                    Severity.ERROR,
                    f"{both}: keep one entry (merge their settings)",
                    path=("vms", second),
                )
            )
        elif _exact(entries[won]):
            out.append(
                Diagnostic(
                    Severity.WARNING,
                    f"{both}: the exact entry vms[{won}] applies, the settings of vms[{other}] "
                    f"are not used for it (repeat in vms[{won}] the ones it needs)",
                    path=("vms", other),
                )
            )
        else:
            out.append(
                Diagnostic(
                    Severity.WARNING,
                    f"{both}: the first, vms[{won}], applies"
                    + (
                        ""
                        if _overrides(entries[won]) == _overrides(entries[other])
                        else f" (the settings of vms[{other}] are not used for it: narrow a "
                        "pattern, or select the VM by name)"
                    ),
                    path=("vms", other),
                )
            )
    return out


def in_datacenter(vm: SourceVM, path: str | None) -> bool:
    """A VM (not a template) the spec may select: in the datacenter at `path` (None: any)."""
    return not vm.template and (path is None or (vm.folder or "").startswith(f"{path}/"))


def datacenter_path(wanted: str, paths: Iterable[str]) -> str | Diagnostic:
    """The spec's `source.vcenter.datacenter` as an inventory path: a name is found in any
    folder (`DC0` → /Region-A/DC0), a path (`Region-A/DC0`) as it is. Not found or a name that
    several datacenters share → an error diagnostic (listing what there is). An inventory that
    lists no datacenters takes the name as a top-level one."""
    known = tuple(paths)
    path = "/" + wanted.strip("/")
    if not known:
        return path
    found = [p for p in known if p == path] if "/" in wanted.strip("/") else []
    found = found or [p for p in known if p.rsplit("/", 1)[-1] == wanted]
    if len(found) == 1:
        return found[0]
    summary = (
        f"datacenter {wanted!r} is ambiguous: {', '.join(found)} (give its path)"
        if found
        else f"no datacenter {wanted!r} in vCenter (datacenters: {', '.join(known)})"
    )
    return Diagnostic(Severity.ERROR, summary, path=("source", "vcenter", "datacenter"))


def _describe(entry: dict[str, Any]) -> str:
    """An entry's selector as the spec writes it: "name 'web01'", "pattern folder '/DC0/vm'"."""
    key = next(k for k in ("name", "instance_uuid", "moref", "pattern") if k in entry)
    if key == "pattern" and isinstance(entry[key], dict):
        return "pattern " + ", ".join(f"{k} {v!r}" for k, v in entry[key].items())
    return f"{key} {entry[key]!r}"
