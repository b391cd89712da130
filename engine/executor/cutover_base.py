"""What the parts of a cutover share (Cutover, engine.executor.cutover, is made of them): the
applier and its context, what this apply knows it did without its state (the sources it powered
off, the servers it may have booted), the stop gate, and the readers of recorded state. Also the
attribute names of the conversion record that remember the source's power-off, and the content
epochs of volume records.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from engine.addresses import Address
from engine.errors import StoppedError
from engine.model.state import ResourceRecord
from engine.planner.diff.cutover import shutting_down_since
from engine.providers.openstack import compute
from engine.providers.vsphere.power import POWERED_ON, guest_state, power_state

if TYPE_CHECKING:
    from engine.executor.apply import Applier

POWERED_OFF_AT = "powered_off_at"  # conversion record: when ferry first powered the source off
# conversion record: when the guest accepted ferry's graceful shutdown that then timed out (the
# guest may still be going off: the settle tells that from a source someone powered on)
SHUTDOWN_ASKED_AT = "shutdown_asked_at"


def foreign_server(server_id: str) -> str:
    """The line for a server carrying ferry_vm of the VM that does not run from this state's
    volumes (the plan's server-not-from-replica concern): neither taken nor deleted."""
    return (
        f"server {server_id} carries ferry's metadata for this VM (ferry_vm) but does "
        "not run from this state's volumes: ferry neither takes nor deletes it; plan with the "
        "state that booted it, or remove its metadata (openstack server unset --property "
        f"ferry_vm {server_id}) and plan again"
    )


def content_epoch() -> str:
    """A new content epoch for a volume record: every write of a volume (a sync, a revert, a
    conversion) gives it one; a server boots only from volumes at their converted epoch."""
    return uuid.uuid4().hex[:16]


class CutoverBase:
    """The state the parts of a cutover share (see the module); no step of its own."""

    def __init__(self, applier: Applier) -> None:
        self.a = applier
        self.ctx = applier.ctx
        self._revert_lock = threading.Lock()  # volume syncs of one VM run in parallel
        # What this apply knows without its state (the state may be unreachable when it
        # settles). VM → epoch seconds ferry powered its source off, from this apply's power-off
        # until settle_sources puts it back or leaves it off: what a kill would leave off (read
        # by the signal handler, without locks), and what _settle_unrecorded powers back on.
        self.powered_off: dict[str, float] = {}
        self.booting: set[str] = set()  # VMs whose server may have been booted by this apply
        # Settle.step_began/step_ended: the steps of each VM running now, the VMs whose
        # cutover failed with the source off (→ the step that failed), those settled already
        self.running: Counter[str] = Counter()
        self.abandoned: dict[str, str] = {}
        self.settled_early: set[str] = set()
        self._steps_lock = threading.Lock()
        # VMs whose server record this apply deleted while it was still in progress (booted by
        # an interrupted apply, never confirmed): not a cutover, the source is production
        self.unconfirmed: set[str] = set()
        # The stop gate (break-it 12e item 4): a running step crosses into an action that takes
        # production down or cannot be undone (the power-off, a conversion's start, a boot)
        # only through go_ahead, and the signal handler sets the stop under the same lock: a
        # stop either comes first (the action never starts) or after the action's commitment
        # is recorded (powered_off, which the handler reads). Reentrant: the handler runs in
        # the main thread, which may hold it.
        self.gate = threading.RLock()
        # What each VM's cutover takes of the project's quotas, from its check before the
        # power-off until its server is ACTIVE (then the quotas read count it): the next VM's
        # check takes it first (break-it 12k F4: two VMs of one apply each fitted alone, both
        # were powered off, the second failed 413 after copying with production down). A
        # failed cutover keeps its share until the apply ends: what it made may stay.
        self.reserved: dict[str, dict[str, int]] = {}
        self.reserved_lock = threading.Lock()

    def runs_from_replica(self, name: str, server: Any) -> bool:
        """Whether `server` (found by its ferry_vm metadata of the VM `name`) is this state's:
        it runs from volumes this state recorded for the VM (and only those), or, booted from
        an image (boot: image) with no data volume, from an image it recorded. A server still
        being scheduled lists no volume yet: it is this state's only when the state began a
        boot (its server record, in progress). Break-it 12k F1: a server of another state, or
        restored by hand, was "found, reused" by a saved cutover: the source powered off, the
        replica booted by nobody, "Apply complete"."""
        records = self._records()
        mine = [
            record.attributes
            for address, record in records.items()
            if record.kind in ("volume", "image_volume", "image")
            and Address.parse(address).vm == Address("vm", name)
        ]
        volume_ids = {str(a["volume_id"]) for a in mine if a.get("volume_id")}
        image_ids = {str(a["image_id"]) for a in mine if a.get("image_id")}
        attached = compute.attached_volume_ids(server)
        if attached:
            return attached <= volume_ids
        image = compute.image_of(server)
        if image is not None:
            return image in image_ids
        return str(Address("vm", name, "server")) in records

    def _records(self) -> Mapping[str, ResourceRecord]:
        return self.ctx.store.read().resources

    def _attrs(self, address: str) -> dict[str, Any]:
        record = self._records().get(address)
        return dict(record.attributes) if record else {}

    def _power_state(self, vm: Any) -> str:
        return power_state(self.ctx.si, vm)

    def _going_off(
        self, attrs: Mapping[str, Any], vm: Any, power: str | None = None
    ) -> tuple[float, str]:
        """(since, guest state) of a source still going off from ferry's graceful shutdown,
        from its conversion record's `attrs` and vCenter now (`power`: its power state when
        just read): since is when ferry asked (epoch seconds; see
        engine.planner.diff.cutover.shutting_down_since, the plan's rule), 0.0 when it is not
        going off. guest.guestState is read only for a powered-on source with a power-off
        recorded ("" when not read). Raises VSphereError."""
        power = power or self._power_state(vm)
        if power != POWERED_ON or not (attrs.get(SHUTDOWN_ASKED_AT) or attrs.get(POWERED_OFF_AT)):
            return 0.0, ""
        guest = guest_state(self.ctx.si, vm)
        return shutting_down_since(attrs, power, guest), guest

    def go_ahead(
        self, name: str, action: str, left: str, commit: Callable[[], None] = lambda: None
    ) -> None:
        """Begin `action` ('the power-off', 'the conversion', 'the boot') of VM `name` unless
        the apply was asked to stop: checked and `commit()`ed (a record of what is about to be
        done, no I/O) atomically with the signal handler's stop. `left` says what a stop here
        leaves ('the source is left as it was (poweredOn)'), said in the VM's log and the error.

        Raises StoppedError when the stop came first (nothing of `action` was done)."""
        with self.gate:
            stopped = self.ctx.stop.of(name).is_set()  # the apply's, or the VM's own
            if not stopped:
                commit()
        if stopped:
            line = f"{Address('vm', name)}: stopped before {action}: {left}"
            self.ctx.say(name, line)
            raise StoppedError(line)
