"""Discovery at scale: ferry's single PropertyCollector pass vs naive per-VM property access.

Starts a private ferry-vcsim with N extra VMs, reads the same facts both ways, prints times and
the ratio. Usage: .venv/bin/python benchmarks/discovery.py [--vms 5000] [--naive-sample 500]
The naive read of a sample is scaled to N (it is linear: one round trip per property per VM).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from pyVmomi import vim

from engine.lab.lab import vcsim_binary
from engine.lab.processes import stop
from engine.lab.vcenter import VCenterFiles, start, target
from engine.providers.vsphere.inventory import fetch_inventory, parse_inventory
from engine.providers.vsphere.session import session


def naive(si: Any, limit: int) -> int:
    """What a typical script does: walk the VMs and read attributes (a round trip each)."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    count = 0
    for vm in view.view[:limit]:
        _ = (
            vm.name,
            vm.config.instanceUuid,
            vm.config.hardware.device,
            vm.runtime.powerState,
            vm.runtime.host.name,
            vm.snapshot,
            vm.guest.toolsRunningStatus,
            vm.parent.name,
        )
        count += 1
    view.Destroy()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=5000)
    parser.add_argument("--naive-sample", type=int, default=500)
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=0,
        help="per-call server delay: 0 is loopback vcsim, the best case for naive "
        "access; a LAN vCenter answers a property read in a few ms",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        files = VCenterFiles(Path(tmp) / "vcenter")
        began = time.monotonic()
        record = start(
            vcsim_binary(),
            files,
            Path(tmp) / "disks",
            ("-machines", str(args.vms), "-delay-ms", str(args.delay_ms)),
            timeout=600,
        )
        print(
            f"vcsim with {args.vms} VMs (call delay {args.delay_ms} ms) up in "
            f"{time.monotonic() - began:.1f} s"
        )
        try:
            with session(target(files)) as si:
                t0 = time.perf_counter()
                inventory = parse_inventory(fetch_inventory(si))
                ferry_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                chosen = parse_inventory(
                    fetch_inventory(
                        si,
                        devices_for=lambda objs: [o.ref for o in objs[:: max(1, len(objs) // 100)]],
                    )
                )
                select_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                sampled = naive(si, args.naive_sample)
                naive_s = (time.perf_counter() - t0) * len(inventory.vms) / max(sampled, 1)
        finally:
            stop(record)
    print(
        f"ferry one-pass: {len(inventory.vms)} VMs in {ferry_s:.2f} s "
        f"({len(inventory.vms) / ferry_s:.0f} VMs/s)"
    )
    print(
        f"naive per-VM:   {sampled} VMs measured, {naive_s:.1f} s for {len(inventory.vms)} (scaled)"
    )
    print(f"ratio: ferry is {naive_s / ferry_s:.1f}x faster")
    print(
        f"plan refresh (devices for ~100 chosen VMs only): {len(chosen.vms)} VMs in "
        f"{select_s:.2f} s, {naive_s / select_s:.1f}x faster than naive"
    )


if __name__ == "__main__":
    main()
