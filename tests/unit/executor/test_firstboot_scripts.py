"""First-boot scripts travel in the conversion's job (issue 14): the coordinator reads the
spec's files, the host running the conversion (this process or an agent on another machine,
which need not hold them) writes them to a private directory for virt-customize; a script
gone since the plan is one line before the source is powered off."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from engine.errors import ConversionError
from engine.executor.host import ConvertJob, firstboot_scripts, written_scripts


def test_scripts_travel_as_json_and_are_written_with_their_names_in_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "hello.sh", tmp_path / "b" / "hello.sh"
    first.write_text("#!/bin/sh\necho one\n")
    second.write_bytes(b"#!/bin/sh\n\xff\x00 binary\n")
    scripts = firstboot_scripts([str(first), str(second)])
    job = ConvertJob("id", ["vol"], "web01", {"firstboot": [str(first)]}, "web01", scripts)
    received = ConvertJob.from_json(json.loads(json.dumps(job.to_json())))
    assert received == job
    with written_scripts(received.scripts) as paths:
        assert [p.name for p in paths] == ["hello.sh", "hello.sh"]
        assert len({p.parent for p in paths}) == 2  # same names, no clash
        assert [p.read_bytes() for p in paths] == [first.read_bytes(), second.read_bytes()]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in paths)
        where = paths[0].parent.parent
    assert not where.exists(), "removed once the conversion is over"
    with written_scripts([]) as none:
        assert none == ()


def test_a_job_from_an_older_coordinator_has_no_scripts() -> None:
    old = {"host_id": "id", "volume_ids": ["v"], "name": "w", "conversion": {}, "log_name": "w"}
    assert ConvertJob.from_json(old).scripts == []


def test_a_script_gone_since_the_plan_is_one_line_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "moved.sh"
    with pytest.raises(ConversionError) as raised:
        firstboot_scripts([str(gone)])
    assert str(raised.value).startswith(f"first-boot script {gone}: cannot be read (")
    assert "\n" not in str(raised.value)
