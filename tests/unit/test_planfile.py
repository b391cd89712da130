"""Saved plans are sealed: an edited or corrupt plan is refused with one line, an HMAC under
$FERRY_PLAN_KEY proves the applied plan is the approved one, and the spec is found from any
working directory (issue 13, items 1 and 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from engine.errors import UserError
from engine.model.plan import Plan
from engine.planner import planfile

ROOT = Path(__file__).parents[2]
CASE = ROOT / "tests" / "cases" / "first-delta" / "expected.json"
SCHEMA = json.loads((ROOT / "schemas" / "plan.v1.json").read_text())


def _plan() -> Plan:
    data = json.loads(CASE.read_text())
    data.pop("exit_code")
    data |= {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "ab" * 32}
    return planfile.from_json(data)


def _saved(tmp_path: Path, env: dict[str, str] | None = None) -> Path:
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "wave1.yaml"
    spec.write_text("version: 1\n")
    (tmp_path / "plans").mkdir()
    path = tmp_path / "plans" / "wave1.plan"
    planfile.save(_plan(), path, spec, env or {})
    return path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_round_trip_and_seal(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    data = json.loads(path.read_text())
    Draft202012Validator(SCHEMA).validate(data)
    saved = planfile.load(path, {})
    assert saved.plan == _plan()
    assert saved.sha256 == data["integrity"]["sha256"] == planfile.seal_digest(data)
    assert (saved.signed, saved.checked) == (False, False)
    assert saved.seal_line() == f"plan sha256 {saved.sha256} (not signed)"


def test_an_edited_action_is_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    _edit(path, '"action": "update"', '"action": "delete"')
    with pytest.raises(UserError, match="was changed after it was saved"):
        planfile.load(path, {})


@pytest.mark.parametrize(
    "edit",
    [
        ('"edges": [', '"edges": [["vm.web01.disk[2000]", "vm.web01.snapshot"], '),
        ('"serial": ', '"serial": 1'),
        ('"spec_digest": "', '"spec_digest": "0'),
    ],
)
def test_any_edit_of_what_apply_reads_is_refused(tmp_path: Path, edit: tuple[str, str]) -> None:
    path = _saved(tmp_path)
    _edit(path, *edit)
    with pytest.raises(UserError, match=r"changed after it was saved|not a ferry plan"):
        planfile.load(path, {})


def test_a_plan_without_seal_is_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    data = json.loads(path.read_text())
    del data["integrity"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="carries no integrity digest"):
        planfile.load(path, {})


def test_hmac_proves_the_key(tmp_path: Path) -> None:
    path = _saved(tmp_path, {planfile.KEY_ENV: "approved-by-ci"})
    assert json.loads(path.read_text())["integrity"]["hmac_sha256"]
    good = planfile.load(path, {planfile.KEY_ENV: "approved-by-ci"})
    assert (good.signed, good.checked) == (True, True)
    assert "signature checked" in good.seal_line()
    unchecked = planfile.load(path, {})
    assert (unchecked.signed, unchecked.checked) == (True, False)
    with pytest.raises(UserError, match="not signed with the key"):
        planfile.load(path, {planfile.KEY_ENV: "another-key"})
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    with pytest.raises(UserError, match="is not signed, and FERRY_PLAN_KEY is set"):
        planfile.load(_saved(unsigned), {planfile.KEY_ENV: "approved-by-ci"})
    assert "approved-by-ci" not in path.read_text()


def test_the_spec_is_found_relative_to_the_plan(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    assert json.loads(path.read_text())["spec_file"] == os.path.join("..", "specs", "wave1.yaml")
    saved = planfile.load(path, {})
    assert saved.spec_path is not None
    assert saved.spec_path.resolve() == (tmp_path / "specs" / "wave1.yaml").resolve()
    (tmp_path / "specs" / "wave1.yaml").unlink()
    assert planfile.load(path, {}).spec_path is None


def _apply(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "apply", *args, "--auto-approve"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_apply_refuses_an_edited_plan_with_one_line(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    _edit(path, '"action": "update"', '"action": "delete"')
    done = _apply(str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "was changed after it was saved" in lines[0], done.stderr


def test_apply_names_a_missing_spec_and_refuses_a_signed_plan_without_key(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    (tmp_path / "specs" / "wave1.yaml").unlink()
    done = _apply(str(path), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the spec this plan was made from (../specs/wave1.yaml" in done.stderr
    assert "pass --spec PATH" in done.stderr
    missing = _apply(str(path), "--spec", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    signed_dir = tmp_path / "signed"
    signed_dir.mkdir()
    signed = _saved(signed_dir, {planfile.KEY_ENV: "k"})
    env = {k: v for k, v in os.environ.items() if k != planfile.KEY_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "apply", str(signed), "--auto-approve"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "is signed: set FERRY_PLAN_KEY" in done.stderr


def _verify_plan(tmp_path: Path) -> Path:
    """A saved plan made with --verify (case verify-in-sync: a verify step for db01's disk)."""
    data = json.loads((ROOT / "tests" / "cases" / "verify-in-sync" / "expected.json").read_text())
    data.pop("exit_code")
    data |= {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "ab" * 32}
    spec = tmp_path / "wave1.yaml"
    spec.write_text("version: 1\n")
    path = tmp_path / "verify.plan"
    planfile.save(planfile.from_json(data), path, spec, {})
    return path


@pytest.mark.parametrize(
    "edit",
    [
        ('"verify": true,\n  "targets"', '"verify": false,\n  "targets"'),
        ('"action": "verify"', '"action": "no-op"'),
    ],
)
def test_the_seal_covers_what_verify_planned(tmp_path: Path, edit: tuple[str, str]) -> None:
    """Turning a --verify plan's verify off, or a verify step into a no-op, breaks the seal."""
    path = _verify_plan(tmp_path)
    saved = planfile.load(path, {})
    assert saved.plan.verify and saved.plan.counts()["verify"] == 1
    Draft202012Validator(SCHEMA).validate(json.loads(path.read_text()))
    _edit(path, *edit)
    with pytest.raises(UserError, match="was changed after it was saved"):
        planfile.load(path, {})


def test_apply_verify_refuses_a_plan_made_without_it(tmp_path: Path) -> None:
    """A saved plan is applied as approved: `apply PLAN --verify` of a plan made without
    --verify would verify less than asked, so it is refused with one line."""
    path = _saved(tmp_path)
    done = _apply(str(path), "--verify", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "planned without --verify" in lines[0], done.stderr
    assert "ferry plan --verify --out PLAN" in lines[0]
