"""A conversion host's name matching several servers is one line naming their IDs, before the
apply (or the agent) does anything (seen on the lab: two servers named ferry-conversion-02, and
`ferry apply` ended in openstacksdk's DuplicateResource traceback)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from openstack import exceptions as os_exc

from engine.errors import UserError
from engine.providers.openstack.compute import conversion_server


class Compute:
    def __init__(self, servers: list[Any]) -> None:
        self.all = servers

    def find_server(self, name: str, ignore_missing: bool) -> Any:
        found = [s for s in self.all if name in (s.name, s.id)]
        if len(found) > 1:
            raise os_exc.DuplicateResource(f"More than one Server exists with the name '{name}'.")
        return found[0] if found else None

    def servers(self, name: str) -> list[Any]:
        assert name.startswith("^") and name.endswith("$")  # Nova's name filter is a regex
        return [s for s in self.all if s.name == name[1:-1].replace("\\", "")]


def conn(*servers: tuple[str, str]) -> Any:
    return SimpleNamespace(compute=Compute([SimpleNamespace(id=i, name=n) for i, n in servers]))


def test_one_server_none_or_several() -> None:
    assert conversion_server(conn(("s1", "conv-01")), "conv-01").id == "s1"
    assert conversion_server(conn(("s1", "conv-01")), "conv-02") is None
    two = conn(("s2", "ferry-conversion-02"), ("s1", "ferry-conversion-02"))
    with pytest.raises(UserError) as caught:
        conversion_server(two, "ferry-conversion-02")
    assert str(caught.value) == (
        "conversion host 'ferry-conversion-02': 2 servers have this name (s1, s2): ferry "
        "attaches volumes to one, by name; rename or delete the others, or give the host's "
        "server ID as its name"
    )
    assert conversion_server(two, "s1").id == "s1"
