"""Quota concerns: what a plan would create, against what the destination project has left.

VMs take their share in spec order: the first VM that would not fit gets an error concern (it is
blocked, so apply never stops half-way through it on a quota error) and takes nothing; the VMs
after it may still fit. Unknown quotas (the cloud did not tell) are not checked; -1 is unlimited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import Quota
from engine.model.plan import Action, Change

CREATES = (Action.CREATE, Action.REPLACE)
WHAT = {
    "volumes": "volumes",
    "gigabytes": "GiB of volumes",
    "ports": "ports",
    "instances": "servers",
    "cores": "vCPUs",
    "ram": "MiB of RAM",
}


def demand(vm: DesiredVM, changes: Sequence[Change]) -> dict[str, int]:
    """What this VM's changes would add to the project's usage."""
    volumes = [c for c in changes if c.kind == "volume" and c.action in CREATES]
    servers = [c for c in changes if c.kind == "server" and c.action in CREATES]
    flavor = vm.flavor.flavor
    cores = flavor.vcpus if flavor else vm.source.cpus or 0
    ram = flavor.ram_mb if flavor else vm.source.memory_mb or 0
    return {
        "volumes": len(volumes),
        "gigabytes": sum(int((c.after or {}).get("size_gib") or 0) for c in volumes),
        "ports": sum(c.kind == "port" and c.action in CREATES for c in changes),
        "instances": len(servers),
        "cores": cores * len(servers),
        "ram": ram * len(servers),
    }


class Budget:
    """What is left of each quota, taken VM by VM."""

    def __init__(self, quotas: Mapping[str, Quota]) -> None:
        self.left = {k: q.limit - q.used for k, q in quotas.items() if q.limit >= 0}

    def take(self, needs: Mapping[str, int]) -> tuple[Concern, ...]:
        short = [k for k, n in needs.items() if n and k in self.left and n > self.left[k]]
        if short:
            detail = "; ".join(
                f"{WHAT[k]}: needs {needs[k]}, {max(self.left[k], 0)} left" for k in short
            )
            return (
                Concern(
                    ConcernLevel.ERROR,
                    "quota",
                    f"the destination project's quota is too small for this VM ({detail}, "
                    "after the VMs listed before it): raise the quota (openstack quota set) "
                    "or migrate this VM later",
                ),
            )
        for key, n in needs.items():
            if key in self.left:
                self.left[key] -= n
        return ()
