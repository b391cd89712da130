"""Break-it 12o H1: a cutover's final sync, its source off, waited on its host for slots held
by other VMs' replicate copies (db01 down 114 s, 101 s of it waiting). An urgent step takes one
of the host's urgent slots: as many as its slots, used by urgent steps only."""

from __future__ import annotations

import threading

import pytest

from engine.errors import StoppedError
from engine.executor.host import Host, SyncJob, slot
from engine.executor.remote import agent_concurrency, agent_threads


def _host() -> Host:
    return Host(None, None, None, threading.BoundedSemaphore(2), threading.BoundedSemaphore(2))  # type: ignore[arg-type]


def test_an_urgent_step_takes_an_urgent_slot_while_the_slots_copy_replicas() -> None:
    host = _host()
    assert host.slots is not None and host.urgent_slots is not None
    host.slots.acquire()
    host.slots.acquire()  # two replicas copy
    with slot(host, threading.Event(), "the copy into volume v", urgent=True):
        assert host.urgent_slots._value == 1  # type: ignore[attr-defined]
    stop = threading.Event()
    stop.set()
    with pytest.raises(StoppedError, match="waited for a slot"), slot(host, stop, "a replica"):
        pass  # a replicate copy still waits for the replicas' slots


def test_urgent_steps_are_bounded_by_their_own_slots() -> None:
    host = _host()
    assert host.urgent_slots is not None
    host.urgent_slots.acquire()
    host.urgent_slots.acquire()
    stop = threading.Event()
    stop.set()
    with pytest.raises(StoppedError), slot(host, stop, "a third final sync", urgent=True):
        pass


def test_the_job_carries_urgent_and_an_older_coordinators_job_is_not() -> None:
    disk = {"key": 2000, "capacity": 1, "file_name": "f", "thin": True, "change_id": None}
    job = SyncJob("v", "h", disk, urgent=True)
    assert SyncJob.from_json(job.to_json()).urgent is True
    older = {k: v for k, v in job.to_json().items() if k != "urgent"}
    assert SyncJob.from_json(older).urgent is False


def test_the_agent_runs_its_urgent_share_beside_its_tasks() -> None:
    entry = {"name": "h", "max_parallel": 2}
    assert (agent_concurrency(entry), agent_threads(entry)) == (4, 8)
    assert agent_threads({"name": "h", "max_parallel": 20}) == 25  # Nova's attach cap
