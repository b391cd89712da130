"""VMs in a vApp (break-it 15b N3): vSphere leaves a vApp child's `parent` unset and sets its
`parentVApp` (pyVmomi: VirtualMachine.parentVApp; community.vmware issue #777). The inventory
places such a VM in the vApp's folder (so a spec's datacenter and folder patterns select it),
and the https reader finds its datacenter for dcPath (before: "is in no datacenter", every
sync failed after ferry's snapshot). Fakes: pyVmomi managed objects on a stub answering their
properties (pure unit test)."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from engine.executor.seams import datacenter_path
from engine.planner.selection import in_datacenter
from engine.providers.vsphere.inventory import PATHS, parse_inventory
from engine.providers.vsphere.read import ObjectProps


class Stub:
    """pyVmomi's stub for property reads (ManagedObject attribute access): `props` answers."""

    def __init__(self) -> None:
        self.props: dict[tuple[str, str], Any] = {}

    def InvokeAccessor(self, mo: Any, info: Any) -> Any:  # noqa: N802 (pyVmomi's name)
        return self.props.get((mo._moId, info.name))


def estate(stub: Stub | None = None) -> dict[str, Any]:
    """/Region-A/DC0 (hostFolder > cluster > its root pool > vApp app01 > child vApp db-tier;
    vmFolder > prod > app01) and VMs web01 (in app01) and db01 (in db-tier), as vCenter
    relates them: a vApp's `parent` is a resource pool, its `parentFolder` the VM folder it
    shows in; a nested vApp has `parentVApp`; a VM in a vApp has no `parent`."""
    return {
        "root": vim.Folder("group-d1", stub),
        "region": vim.Folder("group-7", stub),
        "dc": vim.Datacenter("datacenter-2", stub),
        "hosts": vim.Folder("group-h4", stub),
        "vms": vim.Folder("group-v3", stub),
        "prod": vim.Folder("group-v9", stub),
        "cluster": vim.ClusterComputeResource("domain-c7", stub),
        "pool": vim.ResourcePool("resgroup-8", stub),
        "app01": vim.VirtualApp("resgroup-v20", stub),
        "db-tier": vim.VirtualApp("resgroup-v21", stub),
        "web01": vim.VirtualMachine("vm-30", stub),
        "db01": vim.VirtualMachine("vm-31", stub),
    }


RELATIONS = {  # object → {property: object or name}
    "root": {"name": "Datacenters", "parent": None},
    "region": {"name": "Region-A", "parent": "root"},
    "dc": {"name": "DC0", "parent": "region"},
    "hosts": {"name": "host", "parent": "dc"},
    "vms": {"name": "vm", "parent": "dc"},
    "prod": {"name": "prod", "parent": "vms"},
    "cluster": {"name": "cluster1", "parent": "hosts"},
    "pool": {"name": "Resources", "parent": "cluster"},
    "app01": {"name": "app01", "parent": "pool", "parentFolder": "prod", "parentVApp": None},
    "db-tier": {"name": "db-tier", "parent": "app01", "parentFolder": None, "parentVApp": "app01"},
    "web01": {"name": "web01", "parent": None, "parentVApp": "app01"},
    "db01": {"name": "db01", "parent": None, "parentVApp": "db-tier"},
}


def _value(objects: dict[str, Any], prop: str, value: Any) -> Any:
    return value if prop == "name" or value is None else objects[value]


def test_the_inventory_puts_a_vapp_vm_in_its_vapps_folder() -> None:
    objects = estate()
    fetched = [
        ObjectProps(
            ref,
            {
                p: _value(objects, p, RELATIONS[key][p])
                for p in PATHS[type(ref)]  # what fetch_inventory reads of its kind
                if RELATIONS[key].get(p) is not None
            },
        )
        for key, ref in objects.items()
        if type(ref) in PATHS
    ]
    vms = {vm.name: vm for vm in parse_inventory(fetched).vms}
    assert vms["web01"].folder == "/Region-A/DC0/vm/prod/app01"
    assert vms["db01"].folder == "/Region-A/DC0/vm/prod/app01/db-tier"
    assert in_datacenter(vms["db01"], "/Region-A/DC0")  # before: folder None, never selected


def test_the_https_reader_finds_a_vapp_vms_datacenter() -> None:
    stub = Stub()
    objects = estate(stub)
    for key, props in RELATIONS.items():
        for prop, value in props.items():
            stub.props[(objects[key]._moId, prop)] = _value(objects, prop, value)
    assert datacenter_path(objects["web01"]) == "Region-A/DC0"
    assert datacenter_path(objects["db01"]) == "Region-A/DC0"
