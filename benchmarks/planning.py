"""Planning at scale: a spec selecting N VMs (2 disks, 2 NICs each) against recorded state where
every disk was synced once, so the plan holds N snapshots and 2N delta syncs.

Prints CPU seconds for 1k/5k/10k VMs and the per-VM cost, to show the planner is linear.
`--hosts N` lists N conversion hosts with a broker (issue 14), so the plan also places every VM
(engine.planner.placement) and sums each host's share.
Usage: .venv/bin/python benchmarks/planning.py [--sizes 1000 5000 10000] [--hosts 8]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from engine.model.observed import Destination, Flavor, Inventory, SourceDisk, SourceNic, SourceVM
from engine.model.state import ResourceRecord, State, Status
from engine.planner.make import make_plan

GiB = 1024**3


def vm(i: int) -> SourceVM:
    uuid = f"42150000-0000-4000-8000-{i:012d}"
    disks = tuple(
        SourceDisk(
            2000 + k,
            f"disk {k}",
            (k + 1) * 10 * GiB,
            f"ds{k}",
            "[ds] x.vmdk",
            True,
            "persistent",
            None,
            None,
            1000,
            k,
            f"52 aa-bb/{i + 7}",
        )
        for k in range(2)
    )
    nics = tuple(
        SourceNic(
            4000 + k,
            f"nic {k}",
            f"00:50:56:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{(i + k) & 255:02x}",
            "VirtualVmxnet3",
            f"pg{k}",
            None,
            False,
            True,
        )
        for k in range(2)
    )
    return SourceVM(
        f"vm-{i}",
        f"app-{i:05d}",
        uuid,
        None,
        "/DC0/vm",
        "esx1",
        "rhel9_64Guest",
        None,
        "bios",
        2,
        4096,
        "poweredOn",
        "guestToolsRunning",
        True,
        False,
        disks,
        nics,
        (),
    )


def state_for(vms: list[SourceVM]) -> State:
    records = {}
    for v in vms:
        for d in v.disks:
            address = f"vm.{v.name}.disk[{d.key}]"
            records[address] = ResourceRecord(
                address,
                "volume",
                Status.READY,
                {
                    "volume_id": f"vol-{v.moref}-{d.key}",
                    "change_id": f"52 aa-bb/{int(v.moref[3:])}",
                    "last_sync": {"kind": "delta", "bytes": 64 << 20, "seconds": 1.0},
                },
            )
    return State(1, "bench", 1, records)


SPEC = {
    "version": 1,
    "source": {"vcenter": {"host": "vc", "username": "u", "password_env": "P"}},
    "destination": {"cloud": "c"},
    "defaults": {
        "mode": "replicate",
        "flavor": "auto",
        "network_map": {"pg0": {"network": "n0"}, "pg1": {"network": "n1"}},
        "volume_type_map": {"ds0": "t0", "ds1": "t1"},
    },
    "vms": [{"pattern": {"name": "app-*"}}],
}
DESTINATION = Destination(
    flavors=tuple(Flavor(f"f{c}-{r}", c, r) for c in (1, 2, 4, 8) for r in (2048, 4096, 8192)),
    networks=frozenset({"n0", "n1"}),
    volume_types=frozenset({"t0", "t1"}),
)


def with_hosts(count: int) -> tuple[dict[str, Any], Destination]:
    """SPEC with `count` conversion hosts and a broker (placement over them), and DESTINATION
    with their servers; SPEC and DESTINATION as they are for 0."""
    if not count:
        return SPEC, DESTINATION
    names = [f"conv-{n + 1:02d}" for n in range(count)]
    spec = {
        **SPEC,
        "conversion_hosts": [{"name": name} for name in names],
        "execution": {"broker": "amqp://ferry@broker:5672/ferry"},
        "state": {"backend": "postgres", "dsn_env": "DSN"},
    }
    return spec, replace(DESTINATION, server_names=frozenset(names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--hosts", type=int, default=0, help="conversion hosts to place on")
    args = parser.parse_args()
    spec, destination = with_hosts(args.hosts)
    for n in args.sizes:
        vms = [vm(i) for i in range(n)]
        inventory, state = Inventory(tuple(vms), (), (), ()), state_for(vms)
        began = time.process_time()
        plan = make_plan(spec, inventory, destination, state)
        cpu = time.process_time() - began
        print(
            f"{n:>6} VMs: {len(plan.changes):>6} changes, {len(plan.edges):>6} edges, "
            f"{cpu:6.2f} s CPU ({cpu / n * 1e6:6.0f} µs per VM)"
        )


if __name__ == "__main__":
    main()
