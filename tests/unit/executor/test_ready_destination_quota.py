"""Before the power-off, a cutover checks again what a fresh plan checks and can change between
plan and apply (break-it 12d item 5: a saved cutover plan applied after the instance quota filled
up powered the source off, synced, protected, then failed the boot 403 "Quota exceeded for
instances": 18 s of avoidable downtime in the lab). The planner's quota arithmetic (Budget,
after_power_off) and key pair check are run against the quotas read now; a shortfall is one
line and the source is not powered off. A real SQLite state store; the cloud is a fake of the
openstacksdk calls read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openstack.exceptions import SDKException

from engine.errors import ConversionError, OpenStackError
from engine.executor.cutover import Cutover
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

FULL = {"instances": (10, 10)}  # limit, used


def unreadable(*_: Any, **__: Any) -> None:
    raise SDKException("forbidden")


def cloud(
    quotas: dict[str, tuple[int, int]],
    key_pairs: tuple[str, ...] = ("ops",),
    servers: tuple[tuple[str, str, dict[str, str]], ...] = (),
    attached: tuple[str, ...] = (),
) -> Any:
    """The fake cloud: `quotas` by key (limit, used), the key pairs, the servers (id, name,
    metadata), each booted from the volumes `attached`."""

    def quota_set(keys: tuple[str, ...]) -> Any:
        def read(_project: str, usage: bool) -> Any:
            limits = {k: quotas.get(k, (-1, 0))[0] for k in keys}
            used = {k: quotas.get(k, (-1, 0))[1] for k in keys}
            if "volumes" in keys:  # Cinder's per-type keys, openstacksdk's unknown attributes
                extra = {k: v for k, v in quotas.items() if "_" in k}
                limits |= {k: limit for k, (limit, _) in extra.items()}
                used |= {k: n for k, (_, n) in extra.items()}
            return SimpleNamespace(
                usage=used, to_dict=lambda computed: {**limits, "usage": used}, **limits
            )

        return read

    medium = SimpleNamespace(vcpus=2, ram=4096)
    return SimpleNamespace(
        current_project_id="p",
        network=SimpleNamespace(find_port=lambda i, ignore_missing: i, get_quota=unreadable),
        compute=SimpleNamespace(
            find_flavor=lambda n, ignore_missing: medium if n == "m1.medium" else None,
            keypairs=lambda: [SimpleNamespace(name=k) for k in key_pairs],
            servers=lambda details: [
                SimpleNamespace(
                    id=i,
                    name=n,
                    metadata=m,
                    image="",
                    attached_volumes=[{"id": a} for a in attached],
                )
                for i, n, m in servers
            ],
            get_quota_set=quota_set(("instances", "cores", "ram")),
        ),
        block_storage=SimpleNamespace(
            get_quota_set=quota_set(("volumes", "gigabytes", "snapshots")),
            types=lambda: [SimpleNamespace(name="ssd", id="t-ssd")],
        ),
    )


def cutover(
    tmp_path: Path,
    conn: Any,
    records: tuple[ResourceRecord, ...] = (),
    key_pair: str = "ops",
    firstboot: tuple[str, ...] = (),
    new: tuple[str, ...] = (),
) -> Cutover:
    """web01's cutover: its disks 2000 and 2001 synced before (2 GiB each), and a volume of
    each volume type in `new` still to be made (a cold cutover's: after the final snapshot)."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    port = ResourceRecord("vm.web01.port[0]", "port", Status.READY, {"port_id": "p0"})
    store.write([port, *records], [])
    after = {"name": "web01", "flavor": "m1.medium", "key_pair": key_pair}
    changes = [
        Change("vm.web01.server", "server", Action.CREATE, "", None, after),
        Change(
            "vm.web01.conversion", "conversion", Action.CREATE, "", None, {"firstboot": firstboot}
        ),
        *(
            Change(f"vm.web01.disk[{k}]", "volume", Action.UPDATE, "", {}, {"size_gib": 2})
            for k in (2000, 2001)
        ),
        *(
            Change(
                f"vm.web01.disk[{3000 + i}]",
                "volume",
                Action.CREATE,
                "",
                None,
                {"size_gib": 8, "volume_type": t},
            )
            for i, t in enumerate(new)
        ),
    ]
    return fakes.cutover(store, None, changes, conn=conn)


def test_room_for_the_cutover_passes(tmp_path: Path) -> None:
    quotas = {"instances": (10, 9), "cores": (20, 18), "snapshots": (10, 8), "gigabytes": (100, 96)}
    cutover(tmp_path, cloud(quotas)).ready_destination("web01")


@pytest.mark.parametrize(
    ("quotas", "said"),
    [
        (FULL, r"servers: needs 1, 0 left\)"),
        ({"cores": (20, 19)}, r"vCPUs: needs 2, 1 left"),
        ({"ram": (8192, 6144)}, r"MiB of RAM: needs 4096, 2048 left"),
        ({"snapshots": (10, 9)}, r"volume snapshots: needs 2, 1 left"),  # the protection
        ({"gigabytes": (100, 97)}, r"GiB of volumes and snapshots: needs 4, 3 left"),
    ],
    ids=["instances", "cores", "ram", "snapshots", "gigabytes"],
)
def test_a_quota_filled_since_the_plan_stops_before_the_power_off(
    tmp_path: Path, quotas: dict[str, tuple[int, int]], said: str
) -> None:
    with pytest.raises(OpenStackError, match=said + r".*the source was not powered off$"):
        cutover(tmp_path, cloud(quotas)).ready_destination("web01")


def test_taken_protection_and_a_server_record_are_not_counted_again(tmp_path: Path) -> None:
    """A cutover resumed after its protection (and a boot) of an earlier apply: those are in
    the usage already."""
    records = (
        ResourceRecord(
            "vm.web01.conversion", "conversion", Status.READY, {"protection": {"2000": "s"}}
        ),
        ResourceRecord("vm.web01.server", "server", Status.IN_PROGRESS, {}),
    )
    conn = cloud({**FULL, "snapshots": (10, 10)})
    cutover(tmp_path, conn, records).ready_destination("web01")


def test_a_key_pair_deleted_since_the_plan_stops_before_the_power_off(tmp_path: Path) -> None:
    with pytest.raises(OpenStackError, match=r"key pair 'ops' does not exist.*not powered off"):
        cutover(tmp_path, cloud({}, key_pairs=("other",))).ready_destination("web01")


def test_a_first_boot_script_gone_since_the_plan_stops_before_the_power_off(
    tmp_path: Path,
) -> None:
    """The conversion's job carries the scripts' contents, read where the apply runs: a script
    moved since the plan would fail the conversion after the power-off."""
    there = tmp_path / "hello.sh"
    there.write_text("#!/bin/sh\n")
    room = cloud({})
    cutover(tmp_path, room, firstboot=(str(there),)).ready_destination("web01")
    there.unlink()
    with pytest.raises(ConversionError, match=rf"first-boot script {there}: .*not powered off$"):
        cutover(tmp_path, room, firstboot=(str(there),)).ready_destination("web01")


def test_a_volume_type_deleted_since_the_plan_stops_before_the_power_off(tmp_path: Path) -> None:
    """Break-it 12i F5: a cold cutover of a VM never replicated makes its volumes after the
    final snapshot; a volume type deleted between the saved plan and its apply powered the
    source off (hard), then failed the volume creates on a 404. Now checked before (by name or
    id); a type that exists passes."""
    conn = cloud({})
    cutover(tmp_path, conn, new=("ssd", "t-ssd")).ready_destination("web01")
    with pytest.raises(OpenStackError, match=r"volume type gone-type that its server needs .*"
                       r"the source was not powered off$"):  # fmt: skip
        cutover(tmp_path, conn, new=("ssd", "gone-type")).ready_destination("web01")


def test_the_volumes_made_after_the_power_off_count_in_the_quota(tmp_path: Path) -> None:
    """The same volumes against the volume and gigabyte quotas (two 8 GiB volumes, and a
    protection snapshot of each of the four volumes: 2 + 2 + 8 + 8 GiB)."""
    room = {"volumes": (10, 8), "gigabytes": (100, 64), "snapshots": (10, 6)}
    cutover(tmp_path, cloud(room), new=("ssd", "ssd")).ready_destination("web01")
    with pytest.raises(OpenStackError, match=r"volumes: needs 2, 1 left"):
        cutover(
            tmp_path, cloud({**room, "volumes": (10, 9)}), new=("ssd", "ssd")
        ).ready_destination("web01")


@pytest.mark.parametrize(
    ("quotas", "said"),
    [
        ({"volumes_ssd": (10, 9)}, r"volumes of type ssd: needs 2, 1 left"),
        ({"gigabytes_ssd": (40, 20)}, r"GiB of type-ssd volumes and snapshots: needs 32, 20 left"),
        ({"per_volume_gigabytes": (4, 0)}, r"GiB in one volume \(per_volume_gigabytes\): "
                                           r"needs 8, 4 allowed"),
    ],
    ids=["volumes-per-type", "gigabytes-per-type", "per-volume"],
)  # fmt: skip
def test_cinders_per_type_quotas_and_its_volume_cap_are_checked_before_the_power_off(
    tmp_path: Path, quotas: dict[str, tuple[int, int]], said: str
) -> None:
    """Break-it 12j F1: a saved cold cutover powered web01 off, copied a disk, then failed its
    next volume create on gigabytes_<type> (413 VolumeSizeExceedsAvailableQuota): neither the
    plan nor this check read Cinder's per-type quotas. The two new 8 GiB ssd volumes, and the
    protection snapshots of the new ones (16 GiB of type ssd: the synced ones carry no type
    here), against volumes_ssd, gigabytes_ssd and per_volume_gigabytes."""
    cutover(tmp_path, cloud({}), new=("ssd", "ssd")).ready_destination("web01")
    with pytest.raises(OpenStackError, match=said + r".*the source was not powered off$"):
        cutover(tmp_path, cloud(quotas), new=("ssd", "ssd")).ready_destination("web01")


DISKS = tuple(
    ResourceRecord(f"vm.web01.disk[{k}]", "volume", Status.READY, {"volume_id": f"v{k}"})
    for k in (2000, 2001)
)


@pytest.mark.parametrize(
    ("servers", "records", "refused"),
    [
        ((("s9", "web01", {}),), (), True),  # made by hand since the plan
        ((("s9", "web01", {"ferry_vm": "other"}),), (), True),  # another VM's
        ((("s9", "web01", {"ferry_vm": "u1"}),), DISKS, False),  # ferry's for web01: reused
        ((("s9", "web01-old", {}),), (), False),
        (
            (("s9", "web01", {}),),
            (ResourceRecord("vm.web01.server", "server", Status.READY, {"server_id": "s9"}),),
            False,
        ),
    ],
    ids=["by-hand", "other-vm", "ferrys", "other-name", "recorded"],
)
def test_a_server_of_the_cutovers_name_made_since_the_plan_stops_before_the_power_off(
    tmp_path: Path,
    servers: tuple[tuple[str, str, dict[str, str]], ...],
    records: tuple[ResourceRecord, ...],
    refused: bool,
) -> None:
    """Break-it 12j F4's concern (server-name-taken) checked again before the power-off: a
    server named as the VM's new one that ferry did not boot for it fails the cutover with the
    source on."""
    quotas = {"instances": (10, 1)}
    conn = cloud(quotas, servers=servers, attached=("v2000", "v2001"))
    check = cutover(tmp_path, conn, records).ready_destination
    if not refused:
        check("web01")
        return
    with pytest.raises(
        OpenStackError,
        match=r"^vm.web01: changed since the plan: server s9 named 'web01' exists and ferry did "
        r"not boot it for this VM: .* the source was not powered off$",
    ):
        check("web01")


@pytest.mark.parametrize(
    ("attached", "refused"),
    [(("v2000", "v2001"), False), (("hand-boot",), True), (("v2000", "hand-boot"), True)],
    ids=["this-states", "by-hand", "plus-a-foreign-volume"],
)
def test_a_server_of_this_vm_not_on_this_states_volumes_stops_before_the_power_off(
    tmp_path: Path, attached: tuple[str, ...], refused: bool
) -> None:
    """Break-it 12k F1: a server carrying ferry_vm of web01, restored by hand or booted by
    another state after the plan, was "found, reused" by the saved cutover: the source off, the
    replica booted by nobody, "Apply complete". Checked again before the power-off, as the
    plan's server-not-from-replica concern: refused unless it runs from this state's volumes."""
    servers = (("s9", "web01-restored", {"ferry_vm": "u1"}),)
    conn = cloud({"instances": (10, 1)}, servers=servers, attached=attached)
    check = cutover(tmp_path, conn, DISKS).ready_destination
    if not refused:
        check("web01")
        return
    with pytest.raises(
        OpenStackError,
        match=r"^vm.web01: changed since the plan: server s9 carries ferry's metadata for this "
        r"VM \(ferry_vm\) but does not run from this state's volumes: .*the source was not "
        r"powered off$",
    ):
        check("web01")
