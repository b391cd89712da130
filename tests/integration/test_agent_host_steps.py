"""The host-bound steps besides the copy run on the agent of the VM's placed host (issue 14):
build-old, pinned to the lab's second conversion host, is copied, then compared whole
(`apply --verify`), then cut over; the compare and the guest conversion (a real
virt-v2v-in-place, stopped by the apply's Ctrl-C as soon as it starts: the lab disk holds no
operating system and its inspection would take 80 s to fail) run in that host's `ferry agent`,
the only agent started (a step sent to the first host's queue would wait for an agent there and
fail the apply). Asserted from the agent's own log and the apply's JSON events, not from
timing."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.lab.lab import Lab
from engine.lab.openstack.bootstrap import ensure_conversion_host
from engine.statestore import postgres_at
from tests.integration.agent_spec import agents_spec
from tests.integration.cli import ferry, ferry_background
from tests.integration.test_agents import STARTED, start_agent, stop
from tests.integration.test_conversion import no_converters_within
from tests.integration.test_placement_agents import HOSTS

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
VM, DISK = "build-old", "vm.build-old.disk[2000]"


def spec_for(tmp_path: Path, schema: str, mode: str) -> Path:
    """The demo spec for build-old alone (`mode`, not verified on copy), pinned to the second
    of two conversion hosts, the lab's broker, state in PostgreSQL (`schema`). The cutover's
    gives that host max_parallel 1, not 2: what its agent uses of the spec differs (its agent
    digest), as a mode alone would not."""
    vm = f"name: {VM}\n    mode: {mode}\n    verify: false\n    conversion_host: {HOSTS[1]}\n"
    hosts = [(HOSTS[0], 2), (HOSTS[1], 1 if mode == "cutover" else 2)]
    return agents_spec(tmp_path / f"{mode}.yaml", schema, hosts, [vm])


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def steps(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["message"]) for e in events if e["event"] == "step"]


def test_a_compare_and_a_conversion_run_on_the_agent_of_the_vms_placed_host(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    monkeypatch.setenv("FERRY_STATE_DSN", lab.postgres.dsn())  # the agent's environment too
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "agent-state"))  # its journal and logs
    schema = f"host_steps_{uuid.uuid4().hex[:8]}"
    replicate, cutover = (
        spec_for(tmp_path, schema, "replicate"),
        spec_for(tmp_path, schema, "cutover"),
    )
    ensure_conversion_host(lab.openstack("ferry-lab"), HOSTS[1])  # unless `lab up --hosts 2`
    log = tmp_path / "agent.log"
    marks: dict[str, float] = {}
    try:
        start_agent(lab, replicate, log, host=HOSTS[1])
        copied = ferry(lab, "apply", str(replicate), "--auto-approve", "--json")
        assert copied.returncode == 0, copied.stdout + copied.stderr
        marks["agent + copy"] = time.monotonic() - began

        verified = ferry(lab, "apply", str(replicate), "--verify", "--auto-approve", "--json")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        marks["verify"] = time.monotonic() - began - sum(marks.values())
        store = postgres_at(lab.postgres.dsn(), schema).open(create=False)
        record = store.read().resources[DISK].attributes  # the compare's record
        store.close()
        assert record["last_verify"]["change_id"] == record["change_id"], record
        # the cutover's spec differs in what the agent uses (another agent digest): the agent
        # still running would refuse its final sync, so the apply stops before the power-off
        # (break-it 12m F6)
        refused_before_the_power_off(ferry(lab, "apply", str(cutover), "--auto-approve", "--json"))
        marks["refused cutover"] = time.monotonic() - began - sum(marks.values())
        stop(STARTED.pop())  # its own agent
        start_agent(lab, cutover, log, host=HOSTS[1])
        converted = stopped_mid_conversion(lab, cutover)
        marks["agent + cutover"] = time.monotonic() - began - sum(marks.values())
    finally:
        for started in STARTED:
            stop(started)
        STARTED.clear()
    agent_log = log.read_text(errors="replace")
    volume_id = str(record["volume_id"])
    assert record["last_verify"]["sha256"] == next(
        e["sha256"] for e in events_of(verified.stdout) if e["event"] == "verified"
    )
    compared_on_the_agent(events_of(verified.stdout), agent_log, volume_id)
    converted_on_the_agent(converted, agent_log, volume_id, tmp_path)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in marks.items())
    print(f"\nhost steps on the agent: {time.monotonic() - began:.0f} s ({phases})")


def compared_on_the_agent(events: list[dict[str, Any]], agent_log: str, volume_id: str) -> None:
    """The compare was taken by the agent of ferry-conversion-02 (the volume attached to its
    server there), found the volume equal and said so."""
    said = steps(events)
    taken = f"{DISK}: taken by agent {HOSTS[1]} (queue ferry.host.{HOSTS[1]}) for the compare"
    assert taken in said, said
    equal = f"{DISK}: volume {volume_id} equals disk 2000 at snapshot "
    assert any(m.startswith(equal) for m in said), said
    assert [e["address"] for e in events if e["event"] == "verified"] == [DISK]
    assert f"compare volume {volume_id}" in agent_log, agent_log[-3000:]
    assert len(re.findall(r"Task ferry\.compare\[[^]]+\] succeeded", agent_log)) == 1


def refused_before_the_power_off(refused: Any) -> None:
    """The cutover asked the placed host's agent, started with the replicate spec, before the
    power-off: refused in one line naming both digests, no snapshot taken, nothing powered
    off."""
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = steps(events_of(refused.stdout))
    assert not any("snapshot" in m or "powered off" in m for m in said), said
    assert (
        f"vm.{VM}: agent {HOSTS[1]} refused the cutover's final sync: the coordinator's spec "
        "differs from the agent's in what an agent uses (agent digest "
        in refused.stdout
        + refused.stderr
    ), refused.stdout[-3000:] + refused.stderr
    assert "nothing was powered off, the source is left as it was" in refused.stdout


def stopped_mid_conversion(lab: Lab, spec: Path) -> list[dict[str, Any]]:
    """The cutover's apply (JSON events), Ctrl-C (SIGINT to its process group) once the agent
    says virt-v2v-in-place starts: its events until it exited 130."""
    proc = ferry_background(lab, "apply", str(spec), "--auto-approve", "--json")
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if "converting with virt-v2v-in-place" in str(events[-1].get("message")):
            os.killpg(proc.pid, signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:] + err
    return events + events_of(out)


def converted_on_the_agent(
    events: list[dict[str, Any]], agent_log: str, volume_id: str, tmp_path: Path
) -> None:
    """The conversion ran on the same agent, virt-v2v-in-place's output in the agent's log
    directory; the apply's Ctrl-C stopped it there (no virt-v2v-in-place left running), and
    the coordinator restored the volume."""
    starts = [e for e in events if e["event"] == "node_start" and e["address"].endswith("sion")]
    assert [e.get("host") for e in starts] == [HOSTS[1]], starts
    said = steps(events)
    taken = f"vm.{VM}: taken by agent {HOSTS[1]} (queue ferry.host.{HOSTS[1]}) for the conversion"
    assert taken in said, said
    line = next(m for m in said if m.startswith(f"vm.{VM}: converting with virt-v2v-in-place"))
    v2v_log = Path(line.split("(log ")[1].rstrip(")"))
    assert v2v_log.is_relative_to(tmp_path / "agent-state" / "ferry" / "agent" / HOSTS[1]), line
    assert "virt-v2v-in-place -i libvirtxml" in v2v_log.read_text(errors="replace")
    assert f"convert {VM} on volumes {volume_id}" in agent_log, agent_log[-3000:]
    assert re.search(r"task \S+: ended: virt-v2v-in-place stopped", agent_log), agent_log[-3000:]
    no_converters_within(30)
    assert f"vm.{VM}: volumes restored from their protection snapshots" in said
