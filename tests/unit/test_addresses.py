from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.addresses import INDEXED, PARTS, Address
from engine.errors import UserError


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("vm.web01", Address("vm", "web01")),
        ("vm.web01.disk[2000]", Address("vm", "web01", "disk", 2000)),
        ("vm.web01.port[0]", Address("vm", "web01", "port", 0)),
        ("vm.web01.server", Address("vm", "web01", "server")),
        ('vm["Reporting Ünit 1"].snapshot', Address("vm", "Reporting Ünit 1", "snapshot")),
        ("flavor.m1-web01", Address("flavor", "m1-web01")),
    ],
)
def test_parse_and_print(text: str, address: Address) -> None:
    assert Address.parse(text) == address
    assert str(address) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vm",
        "vm.",
        "disk.web01",
        "vm.web01.disk",
        "vm.web01.server[1]",
        "vm.web 01",
        'vm["x"',
        "vm.web01.nope",
        "vm.1abc",
    ],
)
def test_bad_addresses(text: str) -> None:
    with pytest.raises(UserError, match="not an address"):
        Address.parse(text)


parts = st.sampled_from([None, *PARTS])


@given(name=st.text(min_size=1, max_size=30), part=parts, index=st.integers(0, 99999))
@example(name="A\n", part="cbt", index=0)  # found by Hypothesis: "$" matched before a "\n"
def test_round_trip(name: str, part: str | None, index: int) -> None:
    address = Address("vm", name, part, index if part in INDEXED else None)
    assert Address.parse(str(address)) == address
