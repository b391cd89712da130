"""The docs and examples stay true: the spec reference is generated from the schema (stale →
fail), every key is described, every example spec validates, and both CI pipeline files run
the gate script that the lab test exercises."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from engine.diagnostics import Severity
from engine.docs.reference import UndocumentedError, load_schema, render
from engine.spec.validate import validate_file

ROOT = Path(__file__).parents[2]


def test_the_spec_reference_is_up_to_date() -> None:
    written = (ROOT / "docs" / "spec-reference.md").read_text()
    assert written == render(), (
        "docs/spec-reference.md is stale: python -m engine.docs.reference > docs/spec-reference.md"
    )


def test_an_undocumented_key_fails_the_generator() -> None:
    schema = copy.deepcopy(load_schema())
    del schema["$defs"]["state"]["properties"]["schema"]["description"]
    with pytest.raises(UndocumentedError, match=r"state\.schema"):
        render(schema)


def test_every_section_of_the_reference_is_linked_and_every_key_listed() -> None:
    text = render()
    for key in ("source.vcenter.tls", "defaults.power_off", "vms[].nics[]", "state"):
        assert f"## `{key}`" in text
    assert "| `max_downtime` |" in text and "| `dsn_env` |" in text


@pytest.mark.parametrize("name", ["replicate", "cutover", "cold"])
def test_example_specs_validate(name: str) -> None:
    loaded = validate_file(ROOT / "examples" / "specs" / f"{name}.yaml")
    errors = [d.render() for d in loaded.diagnostics if d.severity is Severity.ERROR]
    # the examples name the production host's secret and CA files, absent on this machine
    errors = [e for e in errors if "'/etc/ferry/" not in e or "No such file" not in e]
    assert errors == []
    modes = {(v.get("mode") or loaded.data["defaults"]["mode"]) for v in loaded.data["vms"]}
    assert name in modes


def test_both_pipelines_run_the_tested_gate_script() -> None:
    github = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yml").read_text())
    runs = [s.get("run", "") for job in github["jobs"].values() for s in job["steps"]]
    gitlab = yaml.safe_load((ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text())
    scripts = [line for job in ("ferry-plan", "ferry-apply") for line in gitlab[job]["script"]]
    for commands in (runs, scripts):
        assert 'examples/ci/ferry-gate plan "$SPEC"' in commands
        assert "examples/ci/ferry-gate apply" in commands
    assert (ROOT / "examples" / "ci" / "ferry-gate").stat().st_mode & 0o111
