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
from openstack.exceptions import NotFoundException, SDKException

from engine.errors import ConversionError, OpenStackError
from engine.executor.cutover import Cutover
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner.quota import PER_VOLUME
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

FULL = {"instances": (10, 10)}  # limit, used


def unreadable(*_: Any, **__: Any) -> None:
    raise SDKException("forbidden")


SYNCED = {"v2000": (None, 2), "v2001": (None, 2)}  # disks 2000 and 2001's volumes: type, GiB


def cloud(
    quotas: dict[str, tuple[int, int]],
    key_pairs: tuple[str, ...] = ("ops",),
    servers: tuple[tuple[str, str, dict[str, str]], ...] = (),
    attached: tuple[str, ...] = (),
    held: dict[str, tuple[str | None, int]] | None = None,
    default_type: str | None = None,
) -> Any:
    """The fake cloud: `quotas` by key (limit, used), the key pairs, the servers (id, name,
    metadata), each booted from the volumes `attached`, the volumes Cinder holds (`held`: id →
    (type, GiB); SYNCED unless given) and the project's default volume type (None: GET
    /types/default answers 404)."""
    volumes = SYNCED if held is None else held

    def get_volume(volume_id: str) -> Any:
        if volume_id not in volumes:
            raise NotFoundException("no such volume")
        volume_type, size = volumes[volume_id]
        return SimpleNamespace(id=volume_id, volume_type=volume_type, size=size)

    def get_type(type_id: str) -> Any:
        if type_id != "default" or default_type is None:
            raise NotFoundException("Volume type default could not be found.")
        return SimpleNamespace(id="t-default", name=default_type)

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
            get_volume=get_volume,
            get_type=get_type,
            volumes=lambda details: [
                SimpleNamespace(id=i, volume_type=vt, size=gib) for i, (vt, gib) in volumes.items()
            ],
        ),
    )


def cutover(
    tmp_path: Path,
    conn: Any,
    records: tuple[ResourceRecord, ...] = (),
    key_pair: str = "ops",
    firstboot: tuple[str, ...] = (),
    new: tuple[str | None, ...] = (),
    synced: dict[int, dict[str, Any]] | None = None,
) -> Cutover:
    """web01's cutover: its disks 2000 and 2001 synced before into 2 GiB volumes v2000 and
    v2001 (their final delta planned as `synced` says: `after` by disk key, else 2 GiB and no
    type), and a volume of each volume type in `new` still to be made (a cold cutover's: after
    the final snapshot)."""
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
            Change(
                f"vm.web01.disk[{k}]",
                "volume",
                Action.UPDATE,
                "",
                {"volume_id": f"v{k}", "size_gib": 2},
                (synced or {}).get(k, {"size_gib": 2}),
            )
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
    said = r"server s9 named 'web01' exists and ferry did not boot it for this VM: .* the source"
    _passes_or_says(cutover(tmp_path, conn, records), refused, said)


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
    said = (
        r"server s9 carries ferry's metadata for this VM \(ferry_vm\) but does not run from "
        r"this state's volumes: .*the source"
    )
    _passes_or_says(cutover(tmp_path, conn, DISKS), refused, said)


def _passes_or_says(cut: Cutover, refused: bool, said: str) -> None:
    """web01's check before the power-off passes, or (`refused`) fails saying `said` (a regex)
    and that the source was not powered off."""
    if not refused:
        cut.ready_destination("web01")
        return
    with pytest.raises(
        OpenStackError,
        match=rf"^vm.web01: changed since the plan: {said} was not powered off$",
    ):
        cut.ready_destination("web01")


GROWN = {2001: {"size_gib": 3}}  # disk 2001 grew from 2 to 3 GiB: its volume is extended


@pytest.mark.parametrize(
    ("key", "needs", "said"),
    [
        ("gigabytes_slow", 6, "GiB of type-slow volumes and snapshots: needs 6, 5 left"),
        ("gigabytes", 6, "GiB of volumes and snapshots: needs 6, 5 left"),
        ("per_volume_gigabytes", 3, r"GiB in one volume \(per_volume_gigabytes\): needs 3, "
                                    "2 allowed"),
    ],
    ids=["gigabytes-per-type", "gigabytes", "per-volume"],
)  # fmt: skip
def test_a_grown_disks_extend_counts_before_the_power_off(
    tmp_path: Path, key: str, needs: int, said: str
) -> None:
    """Break-it 12k F4: a saved cutover of a replicated VM whose disk grew powered the source
    off, extended the volume, copied it in full, then failed its protection snapshot 413 on
    gigabytes_<type> (or the extend itself on per_volume_gigabytes): the extend was counted
    nowhere, the snapshot at the volume's old size. Now the extend's GiB (+1) and the grown
    volume's snapshot at its new size (2 + 3), of the volume's own type (slow); the cap on one
    volume against its new size."""
    held = {"v2000": ("slow", 2), "v2001": ("slow", 2)}
    room = {key: (needs if key == PER_VOLUME else 50, 0 if key == PER_VOLUME else 50 - needs)}
    cutover(tmp_path, cloud(room, held=held), synced=GROWN).ready_destination("web01")
    short = {key: (needs - 1, 0) if key == PER_VOLUME else (50, 51 - needs)}
    with pytest.raises(OpenStackError, match=said + r".*the source was not powered off$"):
        cutover(tmp_path, cloud(short, held=held), synced=GROWN).ready_destination("web01")


def test_an_extend_done_already_is_not_counted_again(tmp_path: Path) -> None:
    """A cutover resumed after its extend: Cinder's usage holds it; the snapshots remain."""
    held = {"v2000": ("slow", 2), "v2001": ("slow", 3)}
    room = {"gigabytes_slow": (50, 45), "per_volume_gigabytes": (3, 0)}
    cutover(tmp_path, cloud(room, held=held), synced=GROWN).ready_destination("web01")


def test_protection_snapshots_count_in_the_volumes_own_type(tmp_path: Path) -> None:
    """Break-it 12k F6: the spec maps the disks to type `new` since they were synced into
    volumes of type `old` (ferry does not retype, it warns): their protection snapshots
    count in snapshots_old and gigabytes_old, as Cinder counts them, not in `new`'s."""
    held = {"v2000": ("old", 2), "v2001": ("old", 2)}
    remapped = {k: {"size_gib": 2, "volume_type": "new"} for k in (2000, 2001)}
    full_new = {"snapshots_new": (10, 10), "gigabytes_new": (10, 10)}
    cutover(tmp_path, cloud(full_new, held=held), synced=remapped).ready_destination("web01")
    for quotas, said in (
        ({"snapshots_old": (10, 9)}, "snapshots of type-old volumes: needs 2, 1 left"),
        ({"gigabytes_old": (10, 7)}, "GiB of type-old volumes and snapshots: needs 4, 3 left"),
    ):
        with pytest.raises(OpenStackError, match=said + r".*the source was not powered off$"):
            cloudy = cloud(quotas, held=held)
            cutover(tmp_path, cloudy, synced=remapped).ready_destination("web01")


@pytest.mark.parametrize(
    ("quotas", "said"),
    [
        ({"volumes___DEFAULT__": (10, 9)}, "volumes of type __DEFAULT__: needs 2, 1 left"),
        (
            {"gigabytes___DEFAULT__": (40, 10)},
            "GiB of type-__DEFAULT__ volumes and snapshots: needs 36, 30 left",
        ),
        (
            {"snapshots___DEFAULT__": (10, 7)},
            "snapshots of type-__DEFAULT__ volumes: needs 4, 3 left",
        ),
    ],
    ids=["volumes", "gigabytes", "snapshots"],
)
def test_volumes_without_a_type_count_in_the_default_types_quotas(
    tmp_path: Path, quotas: dict[str, tuple[int, int]], said: str
) -> None:
    """Break-it 12k F3: a spec without volume_type_map (Cinder's default type) powered the
    source off, then the volume create failed 413 on gigabytes___DEFAULT__. Cinder gives a
    volume made without a type the project's default type (GET /types/default) and counts it
    there: the two new 8 GiB volumes, and the protection snapshots of all four (2 + 2 + 8 +
    8 GiB; the synced ones hold no type here either). A cloud that does not name its default
    type: the totals only, as before."""
    unnamed = cloud(quotas)
    cutover(tmp_path, unnamed, new=(None, None)).ready_destination("web01")
    named = cloud(quotas, default_type="__DEFAULT__")
    with pytest.raises(OpenStackError, match=said + r".*the source was not powered off$"):
        cutover(tmp_path, named, new=(None, None)).ready_destination("web01")


def test_a_recorded_volume_gone_since_the_plan_counts_as_a_new_one(tmp_path: Path) -> None:
    """The final sync makes a volume again whose recorded one is gone (deleted outside
    ferry): it counts in the volume quotas (it was left out, as a volume recorded)."""
    only_2000 = {"v2000": (None, 2)}
    cutover(tmp_path, cloud({"volumes": (10, 9)}, held=only_2000)).ready_destination("web01")
    with pytest.raises(OpenStackError, match=r"volumes: needs 1, 0 left"):
        conn = cloud({"volumes": (10, 10)}, held=only_2000)
        cutover(tmp_path, conn).ready_destination("web01")


def test_two_cutovers_of_one_apply_share_the_quota_left(tmp_path: Path) -> None:
    """Break-it 12k F4: one saved plan cut web01 and db01 over with room for one server left;
    each VM's check before its power-off fitted alone, both sources went off, the second boot
    failed 403/413 with production down. The first VM's share is taken until its server is
    ACTIVE: the second is refused with its source on, then fits once the first is booted."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    ports = [
        ResourceRecord(f"vm.{vm}.port[0]", "port", Status.READY, {"port_id": f"p-{vm}"})
        for vm in ("web01", "db01")
    ]
    store.write(ports, [])
    after = {"flavor": "m1.medium", "key_pair": "ops"}
    changes = [
        Change(f"vm.{vm}.server", "server", Action.CREATE, "", None, {**after, "name": vm})
        for vm in ("web01", "db01")
    ]
    conn = cloud({"instances": (10, 9)})
    cut = fakes.cutover(store, None, changes, conn=conn, uuids={"web01": "u1", "db01": "u2"})
    cut.ready_destination("web01")
    with pytest.raises(
        OpenStackError,
        match=r"^vm.db01: changed since the plan: .*servers: needs 1, 0 left, after the apply's "
        r"other steps\).*the source was not powered off$",
    ):
        cut.ready_destination("db01")
    cut._release_quota("web01")  # web01's server is ACTIVE: the quotas read count it now
    cut.ready_destination("db01")  # (this fake's usage did not move)
    assert set(cut.reserved) == {"db01"}


def test_a_volume_another_vm_of_the_apply_still_makes_is_counted_first(tmp_path: Path) -> None:
    """Break-it 12l F1: one saved plan, web01's cutover and db01's replication, whose new volume
    was made after web01's check: web01 fitted alone, was powered off, then failed 413 on its
    protection snapshot. The other VMs' volumes not made yet count first; made, Cinder counts
    them (no second time)."""
    quotas = {"gigabytes": (100, 96)}  # web01 protects 2 + 2 GiB: fits alone, not beside db01's
    held = dict(SYNCED)
    cut = cutover(tmp_path, cloud(quotas, held=held))
    db01 = Change("vm.db01.disk[2000]", "volume", Action.CREATE, "", None, {"size_gib": 1})
    cut.a.changes[db01.address] = db01
    with pytest.raises(
        OpenStackError,
        match=r"GiB of volumes and snapshots: needs 4, 3 left, after the apply's other steps\)",
    ):
        cut.ready_destination("web01")
    held["v-db01"] = (None, 1)  # db01's volume is made (Cinder's usage counts it from now)
    record = ResourceRecord(db01.address, "volume", Status.IN_PROGRESS, {"volume_id": "v-db01"})
    cut.ctx.store.write([record], [])
    cut.ready_destination("web01")
