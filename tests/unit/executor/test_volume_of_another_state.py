"""Break-it 12k F5: state B's saved plan made before state A replicated web01; B's apply then
made a second set of web01's volumes (4 in the cloud, every later sync done twice, neither
state's plans saying so). Before a new volume is made, the apply looks for a volume of the same
source disk (ferry_vm, ferry_disk) that another ferry state manages now (ferry_state): one
line, nothing made. A real Applier on a real SQLite state; the cloud is a fake of the
openstacksdk calls made."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.addresses import Address
from engine.errors import OpenStackError
from engine.model.plan import Action, Change
from tests.unit.executor.fakes import UUID, one_vm_applier

CHANGE = Change("vm.web01.disk[2000]", "volume", Action.CREATE, "", None, {"size_gib": 2})


class Cloud:
    """block_storage: `volumes(details)` lists `existing` (id → metadata); create_volume
    records what was asked and answers a volume 'new'."""

    def __init__(self, existing: dict[str, dict[str, str]]) -> None:
        self.existing = existing
        self.created: list[dict[str, Any]] = []
        self.block_storage = SimpleNamespace(
            volumes=lambda details: [
                SimpleNamespace(id=i, metadata=m, status="available") for i, m in existing.items()
            ],
            create_volume=self._create,
            get_volume=lambda i: SimpleNamespace(id=i, status="available"),
        )

    def _create(self, **asked: Any) -> Any:
        self.created.append(asked)
        return SimpleNamespace(id="new", status="available")


def _ensure(tmp_path: Path, cloud: Cloud) -> str:
    applier = one_vm_applier(tmp_path, "web01", "replicate", (CHANGE,))
    applier.ctx.conn = cloud
    return applier._ensure_volume(CHANGE, Address.parse(CHANGE.address), {})


def meta(disk: int, state: str, vm: str = UUID) -> dict[str, str]:
    return {"ferry_vm": vm, "ferry_disk": str(disk), "ferry_state": state}


def test_a_volume_another_state_made_since_the_plan_stops_the_create(tmp_path: Path) -> None:
    cloud = Cloud({"a-2000": meta(2000, "lineage-a")})
    with pytest.raises(
        OpenStackError,
        match=r"^volume a-2000 \(ferry state lineage-a\) of this disk is "
        r"managed by another ferry state, made since the plan: no second volume made",
    ):
        _ensure(tmp_path, cloud)
    assert cloud.created == []


@pytest.mark.parametrize(
    "existing",
    [
        {},
        {"a-2001": meta(2001, "lineage-a")},  # another disk's
        {"a-2000": meta(2000, "lineage-a", vm="another-vm")},  # another VM's
        {"o-2000": meta(2000, "")},  # no state's (os-migrate's, an older ferry's): the plan's call
    ],
    ids=["none", "other-disk", "other-vm", "unlabelled"],
)
def test_other_volumes_do_not_stop_it(tmp_path: Path, existing: dict[str, dict[str, str]]) -> None:
    cloud = Cloud(existing)
    assert _ensure(tmp_path, cloud) == "new"
    assert len(cloud.created) == 1
