"""Issue 13 break-it pass (unit part): apply's last line counts the holes skipped, the plan
labels its downtime as an estimate, and `ferry report` shows verify-only steps (`apply
--verify` over a replica in sync) in a disk's history and their whole-disk sha256."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from engine.addresses import Address
from engine.cli.plan import render
from engine.errors import UserError
from engine.model.plan import Plan, VMPlan
from engine.model.state import ResourceRecord, Status
from engine.report.data import collect
from engine.report.render import html

MiB, GiB = 1024**2, 1024**3
DISK = "vm.web01.disk[2000]"


def test_the_last_line_accounts_for_every_byte_the_copies_went_over() -> None:
    from engine.cli.apply import summary_line  # noqa: PLC0415 (absent before: the test fails alone)

    line = summary_line(True, 3, 3, (42 * MiB, 0, 2 * GiB - 42 * MiB))
    assert line == (
        "Apply complete: 3 of 3 changes done; 42.0 MiB of data copied, 0 B of zeros written, "
        "2.0 GiB of holes skipped"
    )
    assert summary_line(False, 1, 3, (0, 0, 0)).startswith("Apply INCOMPLETE: 1 of 3")


def test_the_plan_says_its_downtime_is_an_estimate() -> None:
    vm = VMPlan("vm.db01", "db01", "u-1", "db01", "cutover", "m1.large", "spec", (), False,
                downtime_seconds=365.0)  # fmt: skip
    plan = Plan("d", "l", 0, (vm,), (), ())
    console = Console(record=True, width=200)
    render(plan, console)
    text = console.export_text()
    assert "estimated cutover downtime ~6 min 5 s" in text, text
    assert ", cutover downtime" not in text


def ev(ts: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, **fields}


def _row(page: str) -> str:
    return page[page.index(f"<td>{DISK}</td>") :].split("</tr>", maxsplit=1)[0]


def test_a_verify_only_step_is_in_the_disks_history_with_its_whole_disk_digest() -> None:
    synced = ev(10, "synced", address=DISK, vm="web01", kind="delta", bytes=MiB, read=MiB,
                seconds=1.0, volume_id="v1", sha256="ab" * 32,
                verified="changed areas")  # fmt: skip
    verified = ev(20, "verified", address=DISK, vm="web01", sha256="cd" * 32,
                  volume_id="v1", seconds=2.5)  # fmt: skip
    other = ev(30, "verified", address=DISK, vm="web01", sha256="ef" * 32, volume_id="v0")
    volume = ResourceRecord(DISK, "volume", Status.READY, {
        "volume_id": "v1",
        "last_sync": {"kind": "delta", "at": 10, "sha256": "ab" * 32, "verified": "changed areas"},
        "last_verify": {"at": 20, "sha256": "cd" * 32, "seconds": 2.5},
    })  # fmt: skip
    row = _row(html(collect({DISK: volume}, [[synced], [verified, other]])))
    assert "delta 1.0 MiB in 1.0 s, verify: equal, nothing copied in 2.5 s" in row, row
    assert f"whole disk: {'cd' * 32}" in row and "changed areas only" not in row
    assert row.count("verify:") == 1  # the other volume's verify is not this one's


KNOWN = {"vm.web01", "vm.db01", "vm.web01.disk[2000]", 'vm["Reporting Ünit 1"]'}


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("vm.WEB01", "vm.web01"),  # suggested vm.db01 before (closer by difflib's ratio)
        ('vm["Reporting Unit 1"]', 'vm["Reporting Ünit 1"]'),
        ("vm.Web01.disk[2000]", "vm.web01.disk[2000]"),
        ("vm.web1", "vm.web01"),
    ],
)
def test_a_mistyped_target_suggests_the_address_meant(typed: str, meant: str) -> None:
    from engine.planner.make import nearest  # noqa: PLC0415 (absent before: fails alone)

    assert nearest(typed, KNOWN) == meant


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        ("web01", "a VM's address is vm.web01; a disk's vm.web01.disk[2000]"),
        ("Reporting Ünit 1", 'a VM\'s address is vm["Reporting Ünit 1"]'),
    ],
)
def test_a_bare_vm_name_as_target_shows_its_address(typed: str, hint: str) -> None:
    with pytest.raises(UserError) as raised:
        Address.parse(typed)
    assert hint in str(raised.value)


@pytest.mark.parametrize("command", ["status", "env"])
def test_a_lab_not_running_where_ferry_looked_says_where_and_how_to_point_at_one(
    tmp_path: Path, command: str
) -> None:
    """`lab status`/`lab env` with no lab in the directory ferry looked in: one line naming it
    and FERRY_LAB_DIR/--dir (env said "the lab's vCenter is not up: run `ferry lab up`", status
    only listed services DOWN), so a user whose lab runs elsewhere does not start a second."""
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "lab", command, "--dir", str(tmp_path / "lab")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        f"no lab is running in {tmp_path / 'lab'}: if one runs elsewhere, set FERRY_LAB_DIR or "
        "pass --dir; else `ferry lab up` starts one there"
    ) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    found = []
    for name, sub in getattr(command, "commands", {}).items():
        found += [(" ".join((*path, name)), sub), *_commands(sub, (*path, name))]
    return found


def test_each_commands_summary_in_help_is_one_line() -> None:
    """`ferry --help` lists each command with its help's first paragraph, line breaks kept: six
    broke mid-phrase ('a timeline of the last' / 'apply and the throughput ...')."""
    import typer  # noqa: PLC0415

    from engine.cli.app import app  # noqa: PLC0415

    broken = [
        name
        for name, command in _commands(typer.main.get_command(app))
        if "\n" in (command.help or "").strip().split("\n\n")[0]
    ]
    assert broken == []


def test_a_saved_plan_says_whether_it_is_signed() -> None:
    """With $FERRY_PLAN_KEY set the saved plan carries an HMAC; `plan --out` said nothing of it,
    so a CI job could not tell from its log that the plan it handed on was signed."""
    from engine.cli.plan import saved_line  # noqa: PLC0415 (absent before: fails alone)

    signed = saved_line(Path("p.plan"), "ab" * 32, {"FERRY_PLAN_KEY": "k"})
    assert f"(sha256 {'ab' * 32}, signed with $FERRY_PLAN_KEY)" in signed
    assert "signed" not in saved_line(Path("p.plan"), "ab" * 32, {})
