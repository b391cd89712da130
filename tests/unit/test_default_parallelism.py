"""Without --parallelism an apply runs as many steps as its conversion hosts have slots, twice
with agents (a copy gives its slot back once its bytes are written and detaches beside the
next one), plus 2 (break-it 14: a fixed 4 ran 4 copies across 3 hosts of 2 slots each, one
host idle)."""

from __future__ import annotations

from engine.cli.apply import _slot_pools, default_parallelism

THREE = {"conversion_hosts": [{"name": "a"}, {"name": "b", "max_parallel": 3}, {"name": "c"}]}


def test_the_hosts_the_apply_writes_on_set_it() -> None:
    assert default_parallelism(THREE, agents=True) == 2 * (2 + 3 + 2) + 2
    assert default_parallelism(THREE, agents=False) == 4  # in-process: the first host only
    assert default_parallelism({"conversion_hosts": [{"max_parallel": 6}]}, False) == 8
    assert default_parallelism({}, agents=False) == 4


class FakeApplier:
    def hosts(self) -> dict[str, str]:
        return {"web01": "esx-1"}

    def slot_pool(self, vm: str) -> str:
        return "conversion"


def test_with_agents_a_hosts_pool_is_its_agents_tasks_and_in_process_its_slots() -> None:
    """Issue 14: with agents the walker lets 2x max_parallel steps at a host (at most 25: Nova's
    attached volumes), the agent's own slots bound the bytes (host.slot)."""
    spec = {
        "source": {"vcenter": {"reads_per_esxi_host": 5}},
        "conversion_hosts": [{"name": "a"}, {"name": "b", "max_parallel": 20}],
    }
    agents, _ = _slot_pools(spec, FakeApplier(), agents=True)  # type: ignore[arg-type]
    assert agents == {"conversion": 4, "conversion:b": 25, "esxi:esx-1": 5}
    here, pools_of = _slot_pools(spec, FakeApplier(), agents=False)  # type: ignore[arg-type]
    assert here == {"conversion": 2, "conversion:b": 20, "esxi:esx-1": 5}
    assert pools_of("vm.web01.disk[2000]") == ["conversion", "esxi:esx-1"]
