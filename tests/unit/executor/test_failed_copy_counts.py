"""A copy that fails midway counts the data it moved (break-it 14 F8: RabbitMQ stopped mid-copy,
the apply failed with "0 B of data copied" while the agent had moved data): the last progress
report's data bytes go to the apply's totals (summary line, apply_end), a stop's counts as
before, and a copy that reported nothing adds nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import AgentError
from engine.executor.applier_base import Context
from engine.executor.apply import Applier
from engine.executor.host import Callbacks, SyncJob
from engine.planner import planfile

CASES = Path(__file__).parents[2] / "cases"
MiB = 1024**2


def _applier(tmp_path: Path) -> Applier:
    data = json.loads((CASES / "placement-three-hosts" / "expected.json").read_text())
    data.pop("exit_code")
    plan = planfile.from_json(
        data | {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "0" * 64}
    )
    ctx = Context(None, None, None, None, None, "id-a", log_dir=tmp_path)  # type: ignore[arg-type]
    return Applier(plan, ctx)


@pytest.mark.parametrize("reported", [[64 * MiB, 192 * MiB], []])
def test_a_copy_failed_midway_counts_what_its_progress_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reported: list[int]
) -> None:
    applier = _applier(tmp_path)

    def lost(_job: SyncJob, _address: str, calls: Callbacks, _host: str) -> Any:
        for done in reported:
            calls.progress(done, 2048 * MiB)
        raise AgentError("lost the broker while the copy ran on conversion host conv-a")

    monkeypatch.setattr(applier, "_run_sync", lost)
    address = "vm.web01.disk[2000]"
    with pytest.raises(AgentError, match="lost the broker"):
        applier._copy(address, {}, None, SyncJob("vol-1", "id-a", {}), "conv-a")  # type: ignore[arg-type]
    counted = applier.ctx.copied.get(address)
    if reported:
        assert counted is not None and counted.bytes_read == 192 * MiB
    else:
        assert counted is None  # nothing said: nothing counted
