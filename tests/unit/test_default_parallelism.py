"""Without --parallelism an apply runs as many steps as its conversion hosts have slots, twice
with agents (a copy gives its slot back once its bytes are written and detaches beside the
next one), plus 2 (break-it 14: a fixed 4 ran 4 copies across 3 hosts of 2 slots each, one
host idle)."""

from __future__ import annotations

from engine.cli.apply import default_parallelism

THREE = {"conversion_hosts": [{"name": "a"}, {"name": "b", "max_parallel": 3}, {"name": "c"}]}


def test_the_hosts_the_apply_writes_on_set_it() -> None:
    assert default_parallelism(THREE, agents=True) == 2 * (2 + 3 + 2) + 2
    assert default_parallelism(THREE, agents=False) == 4  # in-process: the first host only
    assert default_parallelism({"conversion_hosts": [{"max_parallel": 6}]}, False) == 8
    assert default_parallelism({}, agents=False) == 4
