"""The datastore-path disk source: a disk's datastore path maps to its flat extent under the
mount, and a missing one is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import DataplaneError
from engine.executor.seams import flat_extent


def test_a_disk_maps_to_its_flat_extent(tmp_path: Path) -> None:
    extent = tmp_path / "nfs-ds1" / "web 01" / "web 01_1-flat.vmdk"
    extent.parent.mkdir(parents=True)
    extent.write_bytes(b"\0" * 512)
    assert flat_extent(tmp_path, "[nfs-ds1] web 01/web 01_1.vmdk") == extent


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("web01/web01.vmdk", "not a datastore path"),
        ("[nfs-ds2] web01/web01.vmdk", "is the datastore 'nfs-ds2' mounted"),
    ],
)
def test_clear_errors(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(DataplaneError, match=message):
        flat_extent(tmp_path, name)
