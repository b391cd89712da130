"""Parsing what refresh reads from the destination (pure): ports say which VM ferry made them
for, a saved plan keeps a diagnostic's place in the spec, refresh knows the mapped networks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from openstack import exceptions as os_exc
from openstack.image.v2.image import Image

from engine.diagnostics import json_path, parse_path
from engine.model.observed import ObservedVolume
from engine.model.state import ResourceRecord, State, Status
from engine.planner.checks import mapped_networks
from engine.planner.refresh import recorded_images
from engine.providers.openstack.read import (
    PORT_FIELDS,
    fetch_default_type,
    fetch_images,
    newer_snapshots,
    parse_destination,
    parse_image,
    parse_image_volumes,
    parse_port,
    protected,
    server_image,
    volumes_from_images,
)

UUID = "4215aaaa-0000-4000-8000-000000000001"


def port(**fields: Any) -> SimpleNamespace:
    """A port as the refresh lists it: only the PORT_FIELDS it asks Neutron for."""
    base = {"id": "p1", "name": "x", "mac_address": "00:50:56:8F:01:00", "network_id": "n1",
            "tags": [], "description": "", "fixed_ips": [], "device_owner": None,
            "device_id": ""}  # fmt: skip
    assert set(base) == set(PORT_FIELDS)
    return SimpleNamespace(**(base | fields))


def test_a_port_names_the_server_it_is_bound_to() -> None:
    """break-it 16b F1: a destroy forgets a port bound to a server this state did not make; the
    listing must ask for device_id (it was read through getattr, never listed: always "")."""
    assert parse_port(port(device_id="srv-9", device_owner="compute:nova")).device == "srv-9"
    assert parse_port(port()).device == ""


@pytest.mark.parametrize(
    ("fields", "owner"),
    [
        ({"tags": ["ferry", f"ferry_vm:{UUID}"]}, UUID),
        ({"description": f"ferry_vm={UUID} nic=1"}, UUID),
        ({"description": f"ferry_vm={UUID} nic=1, edited"}, None),
        ({"tags": ["ferry"]}, None),
        ({}, None),
    ],
)
def test_a_port_names_the_vm_ferry_made_it_for(fields: dict[str, Any], owner: str | None) -> None:
    assert parse_port(port(**fields)).vm_uuid == owner


def test_a_port_names_the_nic_ferry_made_it_for() -> None:
    assert parse_port(port(description=f"ferry_vm={UUID} nic=1")).nic == 1
    assert parse_port(port(tags=[f"ferry_vm:{UUID}"])).nic is None
    other = port(tags=[f"ferry_vm:{UUID}"], description="ferry_vm=other nic=1")
    assert parse_port(other).nic is None  # the description is another VM's: not trusted


def test_a_port_keeps_its_lowercase_mac_network_ips_and_owner() -> None:
    parsed = parse_port(
        port(
            fixed_ips=[{"subnet_id": "s", "ip_address": "10.0.0.5"}, {"subnet_id": "s6"}],
            device_owner="compute:nova",
        )
    )
    assert (parsed.mac, parsed.network, parsed.ips, parsed.owner) == (
        "00:50:56:8f:01:00",
        "n1",
        ("10.0.0.5",),
        "compute:nova",
    )


def test_the_destination_knows_ids_subnets_key_pairs_and_roles() -> None:
    raw = {
        "flavors": [SimpleNamespace(id="f1", name="m1", vcpus=1, ram=512, disk=20)],
        "networks": [SimpleNamespace(id="n1", name="net-a")],
        "subnets": [
            SimpleNamespace(
                id="s1",
                name="",
                network_id="n1",
                cidr="10.0.0.0/24",
                allocation_pools=[{"start": "10.0.0.2", "end": "10.0.0.254"}],
            )
        ],
        "volume_types": [],
        "security_groups": [SimpleNamespace(id="g1", name="default")],
        "volumes": [
            SimpleNamespace(id="v9", name="theirs", status="available", size=1, metadata={})
        ],
        "ports": [port()],
        "servers": [SimpleNamespace(id="i1", name="conv", status="ACTIVE", metadata={})],
        "key_pairs": ["deploy"],
        "roles": ["Member", "reader"],
    }
    found = parse_destination(raw)
    assert found.network_names == {"n1": "net-a"}
    assert found.security_groups == {"default", "g1"}
    assert found.subnets[0].network == "n1" and found.flavors[0].id == "f1"
    assert found.flavors[0].disk == 20  # GiB of root disk: boot: image picks by it
    assert found.subnets[0].pools == (("10.0.0.2", "10.0.0.254"),)
    assert (found.server_names, found.server_ids) == ({"conv"}, {"i1"})
    # every volume by id, whatever its metadata: a recorded image volume missing is gone
    assert (found.volumes, found.volume_ids) == ((), {"v9"})
    assert found.snapshot_ids is None  # not read: nothing is taken for gone
    snapshot = SimpleNamespace(id="s1", volume_id="v9", created_at="2026-12-01T11:00:00.000000")
    ours = SimpleNamespace(
        id="s2",
        volume_id="v9",
        name="ferry-protect-v9",
        metadata={"ferry_protects": "v9"},
        created_at="2026-12-01T12:00:00",
    )
    snapshot.name, snapshot.metadata = "backup-nightly", {}
    listed = parse_destination(raw | {"snapshots": [snapshot, ours]})
    assert listed.snapshot_ids == {"s1", "s2"} and listed.newer_snapshots == {
        "s1": ("s2",),
        "s2": (),
    }
    assert found.newer_snapshots is None
    # a volume's snapshots not ferry's protection of it: they block its delete (break-it 12i)
    assert listed.foreign_snapshots == {"v9": ("s1 (backup-nightly)",)}
    assert found.foreign_snapshots is None
    assert (found.key_pairs, found.roles) == ({"deploy"}, {"member", "reader"})
    unknown = parse_destination(raw | {"key_pairs": None, "roles": None})
    assert (unknown.key_pairs, unknown.roles) == (None, None)  # unknown: not checked


@pytest.mark.parametrize(
    "path", [(), ("vms", 2, "name"), ("conversion_hosts", 0, "create", "key_pair"), ("a", 1, 2)]
)
def test_a_diagnostic_path_reads_back(path: tuple[str | int, ...]) -> None:
    assert parse_path(json_path(path)) == path


def test_refresh_reads_ports_on_every_network_the_spec_maps() -> None:
    spec = {
        "defaults": {"network_map": {"VM Network": {"network": "net-a"}}},
        "vms": [
            {"name": "web01", "network_map": {"DVPG": {"network": "net-b"}}},
            {"name": "db01", "nics": [{"mac": "00:50:56:00:00:01", "network": "net-c"}]},
            {"name": "app02"},
        ],
    }
    assert mapped_networks(spec) == {"net-a", "net-b", "net-c"}


def test_an_image_lists_every_property_as_glance_names_it() -> None:
    """openstacksdk keeps the keys it knows as attributes (some renamed: hw_vif_multiqueue_enabled
    is is_hw_vif_multiqueue_enabled) and the rest in `properties`: parse_image flattens both."""
    listed = Image.existing(
        id="i-1",
        status="active",
        tags=["ferry"],
        hw_disk_bus="scsi",
        hw_firmware_type="bios",
        hw_vif_multiqueue_enabled="true",
        ferry_vm_uuid=UUID,
        ferry_disk_key="2000",
        ferry_state="lineage-1",
        owner_team="payments",
    )
    found = parse_image(listed)
    assert (found.id, found.status, found.vm_uuid, found.disk_key) == ("i-1", "active", UUID, 2000)
    assert found.lineage == "lineage-1"  # the state that uploaded it (img16c item 2)
    assert {k: found.properties[k] for k in ("hw_disk_bus", "hw_firmware_type", "owner_team")} == {
        "hw_disk_bus": "scsi",
        "hw_firmware_type": "bios",
        "owner_team": "payments",
    }
    assert found.properties["hw_vif_multiqueue_enabled"] == "True"


def test_glance_is_read_in_one_listing_and_a_recorded_image_it_leaves_out_by_id() -> None:
    calls: list[Any] = []
    tagged = SimpleNamespace(id="i-1")

    def got(image_id: str) -> Any:
        calls.append(image_id)
        if image_id == "i-gone":
            raise os_exc.NotFoundException("404")
        return SimpleNamespace(id=image_id)  # its ferry tag removed by hand: still there

    def listed(**kw: Any) -> list[Any]:
        calls.append(kw)
        return [tagged]

    conn = SimpleNamespace(image=SimpleNamespace(images=listed, get_image=got))
    assert [i.id for i in fetch_images(conn, ["i-1"]) or []] == ["i-1"]
    assert calls == [{"tag": ["ferry"]}]  # listed: no read per image
    calls.clear()
    found = fetch_images(conn, ["i-1", "i-untagged", "i-gone"]) or []
    assert [i.id for i in found] == ["i-1", "i-untagged"]
    assert calls == [{"tag": ["ferry"]}, "i-gone", "i-untagged"]

    def refused(**kw: Any) -> list[Any]:
        raise os_exc.ForbiddenException("no")

    assert fetch_images(SimpleNamespace(image=SimpleNamespace(images=refused))) is None


def test_refresh_reads_glance_only_for_output_image() -> None:
    record = ResourceRecord("vm.a.image[1]", "image", Status.READY, {"image_id": "i-1"})
    other = ResourceRecord("vm.a.disk[1]", "disk_file", Status.READY, {"image_id": "x"})
    state = State(1, "l", 1, {r.address: r for r in (record, other)})
    image = {"destination": {"output": "image"}}
    assert recorded_images(image, state) == ["i-1"]
    assert recorded_images({"destination": {}}, state) is None


def test_the_volumes_made_from_images_give_their_image_metadata() -> None:
    made = SimpleNamespace(
        id="v-1", metadata={"ferry_image_vm": UUID}, volume_image_metadata={"os_type": "linux"}
    )
    other = SimpleNamespace(id="v-2", metadata={}, volume_image_metadata={"os_type": "x"})
    brief = SimpleNamespace(id="v-3", metadata={"ferry_image_vm": UUID})  # not read in detail
    assert parse_image_volumes([made, other, brief]) == {"v-1": {"os_type": "linux"}}


def test_the_volumes_ferry_made_from_its_images_name_their_image_and_servers() -> None:
    made = SimpleNamespace(
        id="v1",
        status="in-use",
        size=2,
        metadata={"ferry_image_vm": "u1", "ferry_image_disk": "2000", "ferry_state": "l-1"},
        volume_image_metadata={"image_id": "img-1", "hw_disk_bus": "virtio"},
        attachments=[{"server_id": "srv-1", "device": "/dev/vda"}],
    )
    replica = SimpleNamespace(id="v2", status="available", size=1, metadata={"ferry_vm": "u1"})
    (found,) = volumes_from_images([made, replica])
    assert (found.id, found.vm_uuid, found.disk_key) == ("v1", "u1", 2000)
    assert (found.image_id, found.server_ids, found.size_gib) == ("img-1", ("srv-1",), 2)
    assert found.lineage == "l-1"  # the state that made it, as on every ferry volume


@pytest.mark.parametrize(
    ("image", "found"),
    [(SimpleNamespace(id="img-1"), "img-1"), ({"id": "img-2"}, "img-2"), ("", None), (None, None)],
)
def test_a_server_names_the_image_it_boots_from(image: Any, found: str | None) -> None:
    assert server_image(SimpleNamespace(image=image)) == found


def test_a_volume_with_a_protection_snapshot_of_ferrys_says_so() -> None:
    """break-it 12h F3: the snapshot's `ferry_protects` metadata names the volume it protects;
    other snapshots (a backup tool's) and unprotected volumes say nothing."""

    def volume(vid: str) -> ObservedVolume:
        return ObservedVolume(vid, vid, "available", 2, UUID, 2000, "52 aa/9", False)

    snapshots = [
        SimpleNamespace(id="snap-p", metadata={"ferry_protects": "v1"}),
        SimpleNamespace(id="backup", metadata={"made_by": "veeam"}),
        SimpleNamespace(id="bare", metadata=None),
    ]
    found = protected([volume("v1"), volume("v2")], snapshots)
    assert [v.protected_by for v in found] == ["snap-p", None]
    assert protected([volume("v1")], None)[0].protected_by is None  # snapshots not read


def test_each_snapshot_names_its_volumes_snapshots_taken_after_it() -> None:
    """Break-it 12h F2: Cinder reverts a volume only to its newest snapshot."""

    def snap(i: str, volume: str, at: str) -> Any:
        return SimpleNamespace(id=i, volume_id=volume, created_at=at)

    listed = [
        snap("p", "v1", "2026-12-01T11:00:00.000000"),
        snap("nightly", "v1", "2026-12-01T11:30:00.000000"),
        snap("old", "v1", "2026-12-01T10:00:00.000000"),
        snap("q", "v2", "2026-12-01T12:00:00.000000"),
    ]
    assert newer_snapshots(listed) == {
        "p": ("nightly",),
        "nightly": (),
        "old": ("p", "nightly"),
        "q": (),
    }


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        (SimpleNamespace(id="t0", name="__DEFAULT__"), "__DEFAULT__"),
        (os_exc.NotFoundException("Volume type default could not be found."), None),
        (os_exc.ForbiddenException("Policy doesn't allow volume_extension:types_manage"), None),
    ],
    ids=["named", "no-default", "forbidden"],
)
def test_refresh_reads_the_default_volume_type_when_the_cloud_says(
    answer: Any, name: str | None
) -> None:
    """Break-it 12k F3: Cinder gives a volume made without a type the project's default type
    (GET /v3/types/default) and counts it in that type's quotas; a cloud that does not answer
    leaves it unknown (such volumes count in the totals only, as before)."""
    asked: list[str] = []

    def get_type(type_id: str) -> Any:
        asked.append(type_id)
        if isinstance(answer, Exception):
            raise answer
        return answer

    conn = SimpleNamespace(block_storage=SimpleNamespace(get_type=get_type))
    assert fetch_default_type(conn) == name and asked == ["default"]
    raw = {"flavors": [], "networks": [], "volume_types": [], "security_groups": [],
           "volumes": [], "ports": [], "servers": [], "default_volume_type": name}  # fmt: skip
    assert parse_destination(raw).default_volume_type == name
