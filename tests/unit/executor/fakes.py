"""Fakes shared by the executor's pure unit tests of Cutover (engine.executor.cutover) and
Applier (engine.executor.apply). The state store stays real (SQLite) wherever a test passes one;
each fake stands in for one peer and records what it was asked:

- `context(store, said)`: the part of executor.apply.Context a Cutover reads; `say` appends each
  VM line to `said`; its `si` is a `VCenter`.
- `VCenter`: a ServiceInstance's clock and its VM power-on events (`powered_on_since`).
- `fake_applier(ctx, changes)`: the part of Applier a Cutover calls; its writes go to the real
  store, everything else answers without I/O.
- `cutover(store, said, changes)`: a Cutover over those two.
- `Power`: vSphere's power calls; `calls` records each power-off and power-on in order.
- `patch_vsphere(monkeypatch, **fakes)`: installs fakes of engine.providers.vsphere.power's
  functions where the executor's modules call them.
- `snapshot(name, on_failure)`: the plan's snapshot change of a VM a cutover powers off (what
  the settle reads of the spec's power_off).
- `one_vm_applier(tmp_path, name, mode, changes)`: a real Applier of a one-VM plan on a real
  SQLite state, with no vCenter and no cloud (for its checks of a saved plan).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from engine.executor import cutover_base, settle, source_off
from engine.executor.applier_base import Context, Stop
from engine.executor.apply import Applier
from engine.executor.cutover import Cutover
from engine.model.plan import Action, Change, Plan, VMPlan
from engine.statestore.sqlite import SqliteStateStore

UUID = "4215aaaa-0000-4000-8000-00000000000a"  # the instance UUID of one_vm_applier's VM

# the executor modules that call engine.providers.vsphere.power's functions by their own names
VSPHERE_CALLERS: tuple[ModuleType, ...] = (cutover_base, settle, source_off)


def context(
    store: Any, said: list[str] | None = None, *, conn: Any = None, events: Any = None
) -> Any:
    """A Cutover's context: the state `store`, a `VCenter` as its session (the power calls are
    patched), the cloud connection `conn`, `say(vm, line)` appending each line to `said`
    (when given), the `events` sink (None: no events), and a Stop not set."""

    def say(_vm: str, line: str) -> None:
        if said is not None:
            said.append(line)

    return SimpleNamespace(
        store=store, si=VCenter(), conn=conn, say=say, events=events, stop=Stop()
    )


class VCenter:
    """A ServiceInstance's clock (CurrentTime(): the real one) and the VM power-on events its
    history holds (`power_on(at)`); `powered_on_since` answers as
    engine.providers.vsphere.power's (patch it in with patch_vsphere), counting `queries`."""

    def __init__(self) -> None:
        self.events: list[datetime] = []
        self.queries = 0

    def CurrentTime(self) -> datetime:  # noqa: N802 (vSphere's method name)
        return datetime.now(UTC)

    def power_on(self, at: datetime) -> None:
        """Log a VmPoweredOnEvent at `at`."""
        self.events.append(at)

    @staticmethod
    def powered_on_since(si: VCenter, _vm: Any, since: datetime) -> list[datetime]:
        si.queries += 1
        return sorted(at for at in si.events if at >= since)


def fake_applier(
    ctx: Any, changes: Iterable[Change] = (), *, uuids: dict[str, str] | None = None, **more: Any
) -> Any:
    """The Applier a Cutover calls back: `ctx`, `_write` (the store's own), the VMs' instance
    UUIDs (`uuids`, web01's 'u1' when not given), the plan's `changes` by address, `_vm(name)`
    answering the reference 'ref-<name>', `check_owned` passing (the volumes are this
    state's; test_volume_handed_over tests it), a state lineage ('fake-lineage') and a plan
    made on it (`plan.state_lineage`). `more` adds or overrides attributes (host_for, lineage,
    plan, ...)."""
    return SimpleNamespace(
        ctx=ctx,
        _write=ctx.store.write,
        uuids={"web01": "u1"} if uuids is None else uuids,
        changes={c.address: c for c in changes},
        _vm=lambda name: f"ref-{name}",
        check_owned=lambda *_: None,
        **{
            "lineage": "fake-lineage",
            "plan": SimpleNamespace(state_lineage="fake-lineage"),
            **more,
        },
    )


def cutover(
    store: Any,
    said: list[str] | None = None,
    changes: Iterable[Change] = (),
    *,
    uuids: dict[str, str] | None = None,
    conn: Any = None,
    events: Any = None,
) -> Cutover:
    """A Cutover of `changes` over `store` (see context and fake_applier)."""
    ctx = context(store, said, conn=conn, events=events)
    return Cutover(fake_applier(ctx, changes, uuids=uuids))


class Power:
    """vSphere's power calls (engine.providers.vsphere.power) on VMs named by their reference
    ('ref-web01'). `calls` records 'off <ref>' and 'on <ref>' in order. power_state answers what
    the VM's last recorded call left, else `state`; power_off answers `how` ('hard',
    'graceful') and records 'awaited <ref>' before 'off <ref>' when told the guest is still
    going off from ferry's earlier shutdown (`asked`: not asked again); power_on answers
    `powers_on` (True: this call powered the VM on; False: it was on already); guest_state
    answers `guest`; wait_power_state records 'wait <ref>' and answers `off_in_time` (True:
    the VM went off then). The attributes may be changed between calls."""

    def __init__(self, state: str = "poweredOn", how: str = "hard", powers_on: bool = True) -> None:
        self.state = state
        self.how = how
        self.powers_on = powers_on
        self.guest = "running"
        self.off_in_time = False
        self.calls: list[str] = []

    def guest_state(self, _si: Any, _vm: Any) -> str:
        return self.guest

    def wait_power_state(self, _si: Any, vm: Any, _state: str, _timeout: float) -> bool:
        self.calls.append(f"wait {vm}")
        if self.off_in_time:
            self.calls.append(f"off {vm}")
        return self.off_in_time

    @property
    def powered_on(self) -> list[str]:
        """The references of the VMs power_on was called for, in order."""
        return [call.removeprefix("on ") for call in self.calls if call.startswith("on ")]

    def power_state(self, _si: Any, vm: Any) -> str:
        last = [call for call in self.calls if call.endswith(f" {vm}")]
        if not last:
            return self.state
        return "poweredOff" if last[-1].startswith("off") else "poweredOn"

    def power_off(
        self, _si: Any, vm: Any, _policy: Any, *_requested: Any, asked: bool = False
    ) -> str:
        if asked:  # a shutdown ferry asked for earlier, only waited for: 'awaited <ref>' first
            self.calls.append(f"awaited {vm}")
        self.calls.append(f"off {vm}")
        return self.how

    def power_on(self, _si: Any, vm: Any) -> bool:
        self.calls.append(f"on {vm}")
        return self.powers_on

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Power:
        """These calls in place of vSphere's (patch_vsphere); returns self."""
        patch_vsphere(
            monkeypatch,
            power_state=self.power_state,
            power_off=self.power_off,
            power_on=self.power_on,
            guest_state=self.guest_state,
            wait_power_state=self.wait_power_state,
        )
        return self


def patch_vsphere(monkeypatch: pytest.MonkeyPatch, **fakes: Callable[..., Any]) -> None:
    """Each of engine.providers.vsphere.power's functions named in `fakes` (power_state,
    power_off, power_on, guest_state, wait_power_state, disk_change_ids) replaced by its fake in
    every executor module that calls it. Fails on a name no such module calls."""
    for name, fake in fakes.items():
        callers = [module for module in VSPHERE_CALLERS if hasattr(module, name)]
        assert callers, f"no executor module calls {name}"
        for module in callers:
            monkeypatch.setattr(module, name, fake)


def snapshot(name: str, on_failure: str, policy: str = "graceful") -> Change:
    """The snapshot change (create) of VM `name` in cutover mode: its source is powered off by
    `policy` ('graceful' | 'hard'), and after a failure `on_failure` ('power_on' | 'leave_off')."""
    after = {"power_off": {"policy": policy, "on_failure": on_failure}}
    return Change(f"vm.{name}.snapshot", "source_snapshot", Action.CREATE, "", None, after)


def one_vm_applier(
    tmp_path: Path,
    name: str,
    mode: str,
    changes: tuple[Change, ...] = (),
    targets: tuple[str, ...] = (),
) -> Applier:
    """A real Applier of a plan of `changes` for one VM `name` (instance UUID `UUID`, `mode`
    'replicate' | 'cutover', --target `targets`) on a real SQLite state (tmp_path/ferry.db),
    logs in tmp_path/logs, no vCenter session and no cloud connection."""
    vm = VMPlan(f"vm.{name}", name, UUID, name, mode, None, "", (), False)
    plan = Plan("d" * 64, "", 1, (vm,), changes, (), targets=targets)
    store = SqliteStateStore(tmp_path / "ferry.db")
    context = Context(None, None, store, None, None, "", log_dir=tmp_path / "logs")  # type: ignore[arg-type]
    return Applier(plan, context)
