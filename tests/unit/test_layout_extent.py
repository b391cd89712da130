"""The flat extent a reader reads comes from the VM's layoutEx (issue 15), not from a name
guessed from the descriptor: pure parse of vim.vm.FileLayoutEx shapes."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from engine.errors import DataplaneError
from engine.providers.vsphere.snapshots import layout_extent

Info = vim.vm.FileLayoutEx.FileInfo
Unit = vim.vm.FileLayoutEx.DiskUnit


def layout(*chains: list[list[tuple[str, str]]]) -> vim.vm.FileLayoutEx:
    """A layoutEx with one disk per chain (keys 2000, 2001, ...); a chain is its units, a unit
    its files as (name, type)."""
    files, disks, key = [], [], 0
    for n, chain in enumerate(chains):
        units = []
        for unit in chain:
            keys = []
            for name, kind in unit:
                files.append(Info(key=key, name=name, type=kind, size=512))
                keys.append(key)
                key += 1
            units.append(Unit(fileKey=keys))
        disks.append(vim.vm.FileLayoutEx.DiskLayout(key=2000 + n, chain=units))
    return vim.vm.FileLayoutEx(file=files, disk=disks)


D, E = "diskDescriptor", "diskExtent"


def test_the_extent_is_the_one_layoutex_lists_beside_the_descriptor() -> None:
    """A descriptor renamed by hand keeps its extent's old name: only layoutEx knows it. With a
    snapshot the chain has a delta unit after the base one; the base descriptor's unit wins."""
    found = layout(
        [[("[ds1] web01/web01.vmdk", D), ("[ds1] web01/web01-flat.vmdk", E)]],
        [
            [("[ds1] web01/web01_1.vmdk", D), ("[ds1] web01/old-name_1-flat.vmdk", E)],
            [("[ds1] web01/web01_1-000001.vmdk", D), ("[ds1] web01/web01_1-000001-delta.vmdk", E)],
        ],
    )
    assert layout_extent(found, "[ds1] web01/web01.vmdk") == "[ds1] web01/web01-flat.vmdk"
    assert layout_extent(found, "[ds1] web01/web01_1.vmdk") == "[ds1] web01/old-name_1-flat.vmdk"


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (None, "lists no extent for disk"),
        (layout([[("[ds1] a/other.vmdk", D), ("[ds1] a/other-flat.vmdk", E)]]), "no extent"),
        (layout([[("[ds1] a/a.vmdk", D)]]), "0 extents"),
        (
            layout(
                [[("[ds1] a/a.vmdk", D), ("[ds1] a/a-s001.vmdk", E), ("[ds1] a/a-s002.vmdk", E)]]
            ),
            "2 extents",
        ),
    ],
)
def test_no_single_flat_extent_is_one_clear_line(found: object, message: str) -> None:
    with pytest.raises(DataplaneError, match=message) as raised:
        layout_extent(found, "[ds1] a/a.vmdk")
    assert "\n" not in str(raised.value)
