"""An agent's copy outlasting RabbitMQ's consumer_timeout (issue 14). RabbitMQ closes the channel
of a delivery left unacknowledged longer than that (30 min by default: a large disk's copy with
late acknowledgement) and requeues the message. The lab compresses the 30 minutes to 3 s (the
broker's runtime setting, restored after): the agent must survive the channel errors (Celery 5
shut it down: "Unrecoverable error: PreconditionFailed"), join each redelivery to the copy it
runs instead of starting a second writer on the volume, and the copy ends once, byte-exact."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.lab.lab import Lab
from tests.integration.cli import ferry
from tests.integration.converge import records
from tests.integration.test_agents import STARTED, sha256_equal, spec_for, start_agent, stop

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]


def test_a_copy_longer_than_the_consumer_timeout_runs_once_and_the_agent_lives(
    lab: Lab, tmp_path: Path
) -> None:
    log, state = tmp_path / "agent.log", tmp_path / "ferry.db"
    spec = spec_for(tmp_path)
    began = time.monotonic()
    lab.broker_consumer_timeout(3000)  # channels opened from now on: the agent's
    try:
        agent = start_agent(lab, spec, log)
        lab.read_delay("build-old", 2000, 1000)  # the copy and its verify last well over 3 s
        done = ferry(
            lab, "apply", str(spec), "--auto-approve", "--state", str(state), "--target",
            "vm.build-old",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        said = " ".join(done.stdout.split())
        agent_log = log.read_text(errors="replace")
        assert "PRECONDITION_FAILED - delivery acknowledgement" in agent_log  # the drill happened
        assert agent.poll() is None, "the agent ended on the channel error:\n" + agent_log
        assert "Unrecoverable error" not in agent_log
        assert "taken again" not in said, said  # one copy: no second start reached the apply
        assert agent_log.count("was delivered again while this agent runs its copy") >= 1, agent_log
        record = records(state)["vm.build-old.disk[2000]"]
        assert record["last_sync"]["kind"] == "full"
        assert record["last_sync"]["sha256"] == sha256_equal(lab, state, "build-old", 2000)
    finally:
        lab.read_errors("build-old", 2000, None)
        lab.broker_consumer_timeout(None)
        for started in STARTED:
            stop(started)
    print(f"\nconsumer_timeout drill {time.monotonic() - began:.0f} s")
