"""destination.output: image (issue 16): the work directory is required, must exist and be
writable; conversion_hosts are unused (a warning); work_dir and image are for output: image."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from engine.diagnostics import Severity
from engine.spec.validate import validate_file, validate_text
from tests.unit.spec.test_validate import VALID


def _found(path: Path, spec: dict[str, object]) -> list[tuple[Severity, str]]:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return [(d.severity, d.render()) for d in validate_file(path, {"VC_PW": "x"}).diagnostics]


def _image_spec(work_dir: Path) -> dict[str, object]:
    spec = copy.deepcopy(VALID)
    del spec["conversion_hosts"]
    del spec["source"]["vcenter"]["tls"]
    spec["destination"] |= {
        "output": "image",
        "work_dir": str(work_dir),
        "image": {"disk_format": "qcow2", "boot": "image"},
    }
    return spec


def test_an_image_spec_with_a_writable_work_dir_is_valid(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    assert _found(tmp_path / "spec.yaml", _image_spec(tmp_path / "work")) == []


def test_output_image_needs_work_dir() -> None:
    spec = _image_spec(Path("/nowhere"))
    del spec["destination"]["work_dir"]  # type: ignore[attr-defined]
    (found,) = [
        d.render()
        for d in validate_text(yaml.safe_dump(spec), "spec.yaml", {}).diagnostics
        if d.severity is Severity.ERROR
    ]
    assert found.startswith("spec.yaml:") and "output: image needs work_dir" in found


def test_a_missing_work_dir_is_one_error_at_its_line(tmp_path: Path) -> None:
    (found,) = _found(tmp_path / "spec.yaml", _image_spec(tmp_path / "missing"))
    assert found[0] is Severity.ERROR
    assert f"work_dir '{tmp_path / 'missing'}' is not a directory: create it" in found[1]
    assert found[1].split(" ")[0].count(":") >= 2  # file:line:col


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any directory")
def test_a_read_only_work_dir_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    (found,) = _found(tmp_path / "spec.yaml", _image_spec(tmp_path / "ro"))
    assert "is not writable by this user" in found[1]


def test_conversion_hosts_with_output_image_are_a_warning(tmp_path: Path) -> None:
    spec = _image_spec(tmp_path)
    spec["conversion_hosts"] = [{"name": "conv-01"}]
    (found,) = _found(tmp_path / "spec.yaml", spec)
    assert found[0] is Severity.WARNING
    assert "conversion_hosts are not used with output: image" in found[1]


def test_work_dir_and_image_are_for_output_image(tmp_path: Path) -> None:
    spec = _image_spec(tmp_path)
    spec["destination"]["output"] = "volume"  # type: ignore[index]
    found = sorted(f for _, f in _found(tmp_path / "spec.yaml", spec))
    assert len(found) == 2
    assert "image is for output: image" in found[0] or "image is for output: image" in found[1]
    assert any("work_dir is for output: image" in f for f in found)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("output", "glance", "got 'glance' (at destination.output)"),
        ("image", {"disk_format": "vmdk"}, "got 'vmdk' (at destination.image.disk_format)"),
        ("image", {"boot": "snapshot"}, "got 'snapshot' (at destination.image.boot)"),
    ],
)
def test_bad_values_name_the_choices(key: str, value: object, message: str) -> None:
    spec = _image_spec(Path("/tmp"))
    spec["destination"][key] = value  # type: ignore[index]
    found = [
        d.render()
        for d in validate_text(yaml.safe_dump(spec), "spec.yaml", {}).diagnostics
        if d.severity is Severity.ERROR
    ]
    assert len(found) == 1 and message in found[0], found


def test_a_relative_work_dir_is_the_spec_files_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 16b L5: a relative work_dir was read against the process's working directory
    and recorded relative: the same spec planned from another (an AAP job, cron) said "recorded
    file ... no longer exists: full copy from 0". Now it is the spec file's directory's, as
    first-boot scripts are, made absolute (symlinks kept); an absolute one stays as written."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "specs")  # another working directory than the spec's parent
    spec = tmp_path / "specs" / "spec.yaml"
    for relative in ("../work", "../work/"):
        spec.write_text(yaml.safe_dump(_image_spec(Path(relative)), sort_keys=False))
        monkeypatch.chdir("/")
        loaded = validate_file(spec, {"VC_PW": "x"})
        assert loaded.diagnostics == []
        assert loaded.data["destination"]["work_dir"] == str(tmp_path / "work")
    absolute = _image_spec(tmp_path)
    absolute["destination"]["work_dir"] = f"{tmp_path}/work/"  # type: ignore[index]
    spec.write_text(yaml.safe_dump(absolute, sort_keys=False))
    loaded = validate_file(spec, {"VC_PW": "x"})
    assert loaded.data["destination"]["work_dir"] == f"{tmp_path}/work/"
