"""vCenter snapshots an interrupted apply left behind (pure): ferry's own (its name and its
description, `SourceSnapshot.ferry_made`, and this state's lineage or none in it) seen on the
VM, or the one its state still records (`vm.X.snapshot`, written when the snapshot is taken
and deleted when it is removed). An apply killed between the two leaves it on the VM; a
snapshot step removes leftovers first, so this plans their removal as its own step wherever
none is planned: a VM in sync, powered off, cut over, or one the spec dropped. Never a
snapshot ferry did not take (a user's `ferry-backup` without ferry's description, a backup
tool's), nor one another ferry state took (its lineage in the description: a second state's
copy may be reading it, break-it 16b F5): those stay and are warned about (concerns
existing-snapshot, other-state-snapshot).

Reach: a VM the spec selects, or one the spec dropped that this state records (found by the
recorded instance UUID, whatever its name now). A ferry-made snapshot on a VM that neither the
spec nor this state names is out of reach on purpose: this state has no claim on that VM, and
the snapshot may be another state's copy in progress (several states may work one vCenter) as
well as a lost state's leftover; removing it could break the other state's copy. It stays
(planner case unclaimed-vm-ferry-snapshot); selecting the VM in a spec, or the state that took
it, removes it."""

from __future__ import annotations

from collections.abc import Sequence

from engine.addresses import Address
from engine.model.observed import SourceSnapshot
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord

LEFT_BY_AN_INTERRUPTED_APPLY = "left by an interrupted apply"


def leftover_snapshots(
    name: str,
    snapshots: Sequence[SourceSnapshot] | None,
    record: ResourceRecord | None,
    lineage: str,
) -> Change | None:
    """`vm.NAME.snapshot delete` for the snapshots among `snapshots` (the VM's, as the
    inventory shows them; None when the lookup did not read the VM) that the state of
    `lineage` left (`SourceSnapshot.left_by`: its own or an older ferry's, never another
    state's: break-it 16b F5) and the recorded one (`record`, kind source_snapshot, attribute
    `moref`); None when there is neither.

    `before` is the record's attributes (if any) and `snapshots`: [{moref, name}] of those
    seen; the executor removes those morefs (and the recorded one) still this state's, and the
    record."""
    own = [s for s in snapshots or () if s.left_by(lineage)]
    if not own and record is None:
        return None
    recorded = str((record.attributes if record else {}).get("moref") or "")
    gone = snapshots is not None and recorded not in {s.moref for s in snapshots}
    names = ", ".join(f"{s.name} ({s.moref})" for s in own)
    if own:
        why = f"{LEFT_BY_AN_INTERRUPTED_APPLY}: remove ferry's snapshot(s) {names}"
    elif gone:
        why = f"{LEFT_BY_AN_INTERRUPTED_APPLY}: snapshot {recorded or '?'} is gone, its record goes"
    else:
        why = f"{LEFT_BY_AN_INTERRUPTED_APPLY}: remove the recorded snapshot {recorded or '?'}"
    before = dict(record.attributes) if record else {}
    before["snapshots"] = [{"moref": s.moref, "name": s.name} for s in own]
    return Change(
        str(Address("vm", name, "snapshot")), "source_snapshot", Action.DELETE, why, before, None
    )
