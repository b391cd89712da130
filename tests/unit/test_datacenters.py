"""Datacenters by name anywhere in the folder tree, or by path (issue 12, item 6): the inventory
lists each datacenter's path and the spec's `source.vcenter.datacenter` resolves against them."""

from __future__ import annotations

from pyVmomi import vim

from engine.diagnostics import Diagnostic, Severity
from engine.planner.selection import datacenter_path
from engine.providers.vsphere.inventory import parse_inventory
from engine.providers.vsphere.read import ObjectProps

PATHS = ("/DC1", "/Region-A/DC0", "/Region-A/DC2", "/Region-B/DC2")


def test_the_inventory_lists_each_datacenter_with_its_folder_path() -> None:
    root, region = vim.Folder("group-d1"), vim.Folder("group-7")
    objects = [
        ObjectProps(root, {"name": "Datacenters"}),
        ObjectProps(region, {"name": "Region-A", "parent": root}),
        ObjectProps(vim.Datacenter("datacenter-2"), {"name": "DC0", "parent": region}),
        ObjectProps(vim.Datacenter("datacenter-3"), {"name": "DC1", "parent": root}),
    ]
    assert parse_inventory(objects).datacenters == ("/DC1", "/Region-A/DC0")


def test_a_name_finds_its_datacenter_in_any_folder() -> None:
    assert datacenter_path("DC0", PATHS) == "/Region-A/DC0"
    assert datacenter_path("DC1", PATHS) == "/DC1"


def test_a_path_finds_its_datacenter() -> None:
    assert datacenter_path("Region-B/DC2", PATHS) == "/Region-B/DC2"
    assert datacenter_path("/Region-A/DC0", PATHS) == "/Region-A/DC0"


def test_a_name_two_datacenters_share_is_an_error_listing_their_paths() -> None:
    found = datacenter_path("DC2", PATHS)
    assert isinstance(found, Diagnostic) and found.severity is Severity.ERROR
    assert "ambiguous: /Region-A/DC2, /Region-B/DC2" in found.summary
    assert found.path == ("source", "vcenter", "datacenter")


def test_an_unknown_datacenter_is_an_error_listing_what_there_is() -> None:
    for wanted in ("DC9", "Region-B/DC0"):
        found = datacenter_path(wanted, PATHS)
        assert isinstance(found, Diagnostic)
        assert f"no datacenter {wanted!r} in vCenter (datacenters: " in found.summary
        assert "/Region-A/DC0" in found.summary
