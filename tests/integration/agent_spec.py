"""The spec of the lab tests that run several conversion hosts' agents (test_placement_agents,
test_agent_host_steps): plans/demo.yaml with the hosts, VMs and state they need."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.integration.cli import ROOT
from tests.integration.test_agents import EXECUTION


def agents_spec(
    path: Path, schema: str, hosts: Sequence[tuple[str, int]], vms: Sequence[str]
) -> Path:
    """plans/demo.yaml written to `path` with `hosts` ((name, max_parallel), in spec order, each
    with devices: connection-info) as conversion_hosts, the lab's broker (execution), the state
    in the lab's PostgreSQL (`schema`, DSN from $FERRY_STATE_DSN) and `vms` (each one entry of
    the vms list, its YAML lines under `- `) as its VMs. Returns `path`."""
    text = (ROOT / "plans" / "demo.yaml").read_text()
    listed = text[text.index("conversion_hosts:") : text.index("\ndefaults:")]
    conversion_hosts = "conversion_hosts:\n" + "".join(
        f"  - name: {h}\n    max_parallel: {n}\n    devices: connection-info\n" for h, n in hosts
    )
    head = text.replace(listed, conversion_hosts).split("\nvms:")[0]
    state = f"state: {{backend: postgres, dsn_env: FERRY_STATE_DSN, schema: {schema}}}\n"
    entries = "".join(f"  - {vm}" for vm in vms)
    path.write_text(f"{head}\n{EXECUTION}\n{state}\nvms:\n{entries}")
    return path
