"""Spec validation: every problem at once, each with its line; generated malformed specs never
crash the validator and always point inside the file."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.diagnostics import Severity, has_errors
from engine.errors import UserError
from engine.providers.vsphere.session import VCenterTarget, ssl_context
from engine.spec.validate import validate_file, validate_text

VALID: dict[str, Any] = {
    "version": 1,
    "source": {
        "vcenter": {
            "host": "vc.example.com",
            "username": "svc",
            "password_env": "VC_PW",
            "tls": {"ca_file": "/etc/ssl/vc.pem"},
        }
    },
    "destination": {"cloud": "prod", "region": "RegionOne"},
    "conversion_hosts": [{"name": "conv-01", "max_parallel": 4}],
    "defaults": {
        "mode": "replicate",
        "flavor": "auto",
        "network_map": {"VM Network": {"network": "net1"}},
        "volume_type_map": {"ds1": "ssd"},
    },
    "vms": [
        {"name": "web01"},
        {"instance_uuid": "4215a7a6-3b1f-4b8e-9c55-1e2f3a4b5c6d"},
        {
            "pattern": {"name": "db-*"},
            "mode": "cutover",
            "nics": [{"mac": "00:50:56:aa:bb:cc", "ip": "10.0.0.5"}],
        },
    ],
    "exclude": [{"name": "db-old"}],
}


def errors(text: str, env: dict[str, str] | None = None) -> list[str]:
    loaded = validate_text(text, "spec.yaml", env or {})
    return [d.render() for d in loaded.diagnostics if d.severity is Severity.ERROR]


def test_valid_spec_has_no_diagnostics() -> None:
    assert errors(yaml.safe_dump(VALID)) == []


def test_demo_spec_is_valid_with_the_lab_environment() -> None:
    env = {
        "FERRY_VCENTER_HOST": "127.0.0.1",
        "FERRY_VCENTER_PORT": "41234",
        "FERRY_VCENTER_USER": "administrator@vsphere.local",
        "FERRY_VCENTER_PASSWORD_FILE": "/lab/password",
        "FERRY_VCENTER_CAFILE": "/lab/cert.pem",
        "FERRY_LAB_DIR": "/lab",
    }
    text = (Path(__file__).parents[3] / "plans" / "demo.yaml").read_text()
    loaded = validate_text(text, "plans/demo.yaml", env)
    assert loaded.diagnostics == []
    assert loaded.data["source"]["vcenter"]["port"] == 41234


def test_every_problem_is_reported_with_its_line() -> None:
    text = """\
version: 2
source:
  vcenter:
    host: vc
    username: admin
    password: secret
destinaton:
  cloud: prod
vms:
  - name: web01
  - name: web01
  - {name: a, moref: vm-1}
  - instance_uuid: 4215a7a6-3b1f-4b8e-9c55-1e2f3a4b5c6d
    nics: [{mac: "zz:00:00:00:00:00"}, {mac: "00:50:56:00:00:01", ip: 10.0.0.999}]
  - name: db01
    name: db02
"""
    found = errors(text)
    # one line per mistake: `destinaton` is not also reported as a missing 'destination', nor
    # `password:` as a missing password_file
    expected = [
        "spec.yaml:1:10: error: must be 1; got 2 (at version)",
        "spec.yaml:6:5: error: passwords are never written in the spec",
        "spec.yaml:7:1: error: unknown key 'destinaton' (did you mean 'destination'?)",
        "spec.yaml:11:11: error: VM name 'web01' is listed twice (first at line 10)",
        "spec.yaml:12:5: error: each VM entry needs exactly one of",
        "spec.yaml:14:18: error: 'zz:00:00:00:00:00' is not a valid MAC address",
        "spec.yaml:14:71: error: '10.0.0.999' is not a valid IP address",
        "spec.yaml:16:5: error: duplicate key 'name'",
    ]
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected, strict=True):
        assert line.startswith(prefix), (line, prefix)


def test_unset_environment_variable_is_one_error_per_value() -> None:
    spec = copy.deepcopy(VALID)
    spec["source"]["vcenter"]["host"] = "${NOPE}"
    assert errors(yaml.safe_dump(spec, sort_keys=False)) == [
        "spec.yaml:4:11: error: environment variable NOPE is not set (at source.vcenter.host)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nsource: [\n", "invalid YAML"),
        ("- just\n- a list\n", "expected object"),
        ("", "the spec is empty: it needs version, source"),
        ("vms:\n  -\n", "expected object, got nothing (null)"),
        ("version: 1\n!!binary aGk=: x\n", "keys must be strings"),
        ("version: !!python/object:os.system echo\n", "invalid YAML"),
    ],
)
def test_not_a_spec(text: str, message: str) -> None:
    found = errors(text)
    assert found and any(message in f for f in found), found


# -- generated malformed specs --------------------------------------------------------------------

Mutation = tuple[str, Any]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


REQUIRED = [
    ("version",),
    ("source",),
    ("destination",),
    ("vms",),
    ("source", "vcenter"),
    ("source", "vcenter", "host"),
    ("destination", "cloud"),
]
WRONG_VALUES = [None, 3.5, -7, "", "x" * 300, [], {}, [1, 2], {"k": "v"}, True]


@st.composite
def broken_specs(draw: st.DrawFn) -> tuple[str, str]:
    spec = copy.deepcopy(VALID)
    kind = draw(
        st.sampled_from(
            ["type", "unknown", "missing", "duplicate", "mac", "cidr", "yaml", "selector", "uuid"]
        )
    )
    if kind == "type":
        path = draw(st.sampled_from([p for p in _paths(spec) if not isinstance(p[-1], int)]))
        old = _get(spec, path)
        new = draw(st.sampled_from([v for v in WRONG_VALUES if type(v) is not type(old)]))
        if path[-1] in ("ip", "mac") or (path[-1] in ("name",) and isinstance(new, str) and new):
            new = 12345
        _get(spec, path[:-1])[path[-1]] = new
    elif kind == "unknown":
        path = draw(
            st.sampled_from(
                [
                    p
                    for p in _paths(spec)
                    if isinstance(_get(spec, p), dict)
                    and p[-1] not in ("network_map", "volume_type_map")
                ]
            )
        )
        _get(spec, path)["zz_" + draw(st.text("abcdefgh", min_size=1, max_size=8))] = 1
    elif kind == "missing":
        path = draw(st.sampled_from(REQUIRED))
        del _get(spec, path[:-1])[path[-1]]
    elif kind == "duplicate":
        spec["vms"].append({"name": "web01"})
    elif kind == "mac":
        spec["vms"][2]["nics"][0]["mac"] = draw(
            st.sampled_from(
                ["00:50:56:aa:bb", "00-50-56-aa-bb-cc", "zz:50:56:aa:bb:cc", "0050.56aa.bbcc", ""]
            )
        )
    elif kind == "cidr":
        spec["defaults"]["network_map"]["VM Network"]["create"] = {
            "cidr": draw(
                st.sampled_from(
                    ["10.0.0.1/24", "10.0.0.0/33", "300.0.0.0/8", "fe80::1/200", "nonsense"]
                )
            )
        }
    elif kind == "selector":
        spec["vms"][0]["moref"] = "vm-42"
    elif kind == "uuid":
        spec["vms"][1]["instance_uuid"] = draw(st.text(min_size=1, max_size=40))
    text = yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
    if kind == "yaml":
        cut = draw(st.integers(1, len(text) - 1))
        text = (
            text[:cut]
            + draw(st.sampled_from(["\n  - ]", ": : :", "\t\n", "{", "\n- [", "'"]))
            + text[cut:]
        )
    return kind, text


@settings(max_examples=250, deadline=None)
@given(case=broken_specs())
def test_malformed_specs_are_errors_with_lines_inside_the_file(case: tuple[str, str]) -> None:
    kind, text = case
    loaded = validate_text(text, "spec.yaml", {})
    lines = text.count("\n") + 1
    if kind == "yaml" and not has_errors(loaded.diagnostics):
        return  # some corruptions still parse into a valid spec (e.g. a quote inside a value)
    assert has_errors(loaded.diagnostics), text
    for diagnostic in loaded.diagnostics:
        assert diagnostic.location is not None, diagnostic
        assert 1 <= diagnostic.location.line <= lines, (diagnostic, text)


def test_cli_reports_and_exits_1_without_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("version: 1\nsource: {vcenter: {host: vc}}\ndestination: {cloud: c}\nvms: []\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(spec)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{spec}:2:" in done.stderr and "missing required key 'username'" in done.stderr
    assert f"{spec}:4:6: error:" in done.stderr  # vms: [] should be non-empty
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_first_boot_scripts_resolve_next_to_the_spec_and_missing_ones_are_errors(
    tmp_path: Path,
) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "net.sh").write_text("#!/bin/sh\n")
    spec = copy.deepcopy(VALID)
    spec["source"]["vcenter"]["tls"] = {"thumbprint": "AA:" * 19 + "AA"}
    spec["source"]["vcenter"]["vddk_libdir"] = "/opt/vddk"  # a thumbprint is VDDK's
    spec["vms"][0]["conversion"] = {"firstboot": ["scripts/net.sh"], "debug": True}
    spec["vms"][1]["conversion"] = {"firstboot": ["scripts/missing.sh"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = validate_file(path, {"VC_PW": "x"})
    problems = [d.render() for d in loaded.diagnostics]
    assert (
        len(problems) == 1
        and "first-boot script 'scripts/missing.sh' is not a file" in (problems[0])
    )
    assert ":" in problems[0].split(" ")[0]  # file:line:col
    del spec["vms"][1]["conversion"]
    path.write_text(yaml.safe_dump(spec))
    loaded = validate_file(path, {"VC_PW": "x"})
    assert loaded.diagnostics == []
    assert loaded.data["vms"][0]["conversion"]["firstboot"] == [  # type: ignore[index]
        str(tmp_path / "scripts" / "net.sh")
    ]


def test_datastore_path_is_for_cold_migrations_only() -> None:
    spec = copy.deepcopy(VALID)
    spec["source"]["vcenter"]["datastore_path"] = "/mnt/datastores"
    found = errors(yaml.safe_dump(spec, sort_keys=False))
    assert len(found) == 3  # web01 and the instance_uuid entry (default replicate), db-* cutover
    assert all("(mode: cold)" in e for e in found)
    spec["defaults"]["mode"] = "cold"
    spec["vms"][2]["mode"] = "cold"
    assert errors(yaml.safe_dump(spec, sort_keys=False)) == []


def test_esxi_direct_mode_has_no_tags() -> None:
    spec = copy.deepcopy(VALID)
    spec["source"]["vcenter"]["esxi"] = True
    spec["vms"].append({"pattern": {"tag": "wave:1"}})
    (found,) = errors(yaml.safe_dump(spec, sort_keys=False))
    assert "an ESXi host has no tags" in found


def test_verify_is_true_false_or_changed() -> None:
    spec = copy.deepcopy(VALID)
    spec["defaults"]["verify"] = "changed"
    spec["vms"][0]["verify"] = True
    spec["vms"][1]["verify"] = False
    assert errors(yaml.safe_dump(spec, sort_keys=False)) == []
    spec["vms"][0]["verify"] = "always"
    (found,) = errors(yaml.safe_dump(spec, sort_keys=False))
    assert "verify must be true, false or 'changed'; got 'always' (at vms[0].verify)" in found


def test_password_and_ca_files_are_checked(tmp_path: Path) -> None:
    """Referenced files exist, a password file is readable by its owner only, a CA file is PEM
    (issue 13, item 4: a missing CA file read like a network fault)."""
    spec = copy.deepcopy(VALID)
    vcenter = spec["source"]["vcenter"]
    del vcenter["password_env"]
    password, ca = tmp_path / "pw", tmp_path / "ca.pem"
    password.write_text("secret\n")
    password.chmod(0o640)
    ca.write_text("not a certificate\n")
    vcenter["password_file"], vcenter["tls"]["ca_file"] = str(password), str(ca)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    found = [d.render() for d in validate_file(path).diagnostics]
    assert any("can be read by others (mode 0640): chmod 600" in f for f in found), found
    assert any("holds no PEM certificate" in f for f in found), found
    password.chmod(0o600)
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert validate_file(path).diagnostics == []
    ca.unlink()
    found = [d.render() for d in validate_file(path).diagnostics]
    assert any(f"CA file '{ca}': No such file or directory" in f for f in found), found


def test_a_ca_file_that_is_not_pem_is_named_when_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(UserError, match=f"CA file {bad} is not a PEM certificate file"):
        ssl_context(VCenterTarget("vc", 443, "u", "p", cafile=bad))
    with pytest.raises(UserError, match="does not exist"):
        ssl_context(VCenterTarget("vc", 443, "u", "p", cafile=tmp_path / "missing.pem"))


def test_a_pinned_conversion_host_is_one_of_the_spec() -> None:
    """vms[].conversion_host names a host of conversion_hosts: a typo is an error at its line
    with the nearest name; none near, the names it lists."""
    spec = copy.deepcopy(VALID)
    spec["conversion_hosts"].append({"name": "conv-02", "availability_zone": "az1"})
    spec["defaults"]["availability_zone"] = "az1"
    spec["vms"][0]["conversion_host"] = "conv-02"
    spec["vms"][2]["availability_zone"] = "az2"
    assert errors(yaml.safe_dump(spec, sort_keys=False)) == []
    spec["vms"][0]["conversion_host"] = "conv-2"
    spec["vms"][1]["conversion_host"] = "elsewhere"
    text = yaml.safe_dump(spec, sort_keys=False)
    typo, far = errors(text)
    line = text.splitlines().index("  conversion_host: conv-2") + 1
    assert typo.startswith(f"spec.yaml:{line}:")
    assert "conversion host 'conv-2' is not in conversion_hosts (did you mean 'conv-02'?)" in typo
    assert "'elsewhere' is not in conversion_hosts (it lists: conv-01, conv-02)" in far
    del spec["conversion_hosts"]
    del spec["vms"][1]["conversion_host"]
    (none,) = errors(yaml.safe_dump(spec, sort_keys=False))
    assert "'conv-2' is not in conversion_hosts (it lists none)" in none


@pytest.mark.parametrize(
    ("reader", "vcenter", "message"),
    [
        ("vddk", {}, "source.reader vddk needs source.vcenter.vddk_libdir"),
        ("datastore_path", {}, "source.reader datastore_path needs source.vcenter.datastore_path"),
        (None, {"tls": {"thumbprint": "AA:" * 19 + "AA"}}, "certificate against a CA"),
    ],
)
def test_a_reader_without_its_settings_is_a_spec_error(
    reader: str | None, vcenter: dict[str, Any], message: str
) -> None:
    """Break-it 15: each of these passed validate and plan and failed only at apply (a CI gate
    approved a plan that could not be applied); the https default included."""
    spec = copy.deepcopy(VALID)
    spec["source"]["vcenter"] |= vcenter
    if "tls" in vcenter:
        spec["source"]["vcenter"]["tls"] = vcenter["tls"]
    if reader is not None:
        spec["source"]["reader"] = reader
    if reader == "datastore_path":
        spec["defaults"]["mode"] = "cold"
        spec["vms"][2]["mode"] = "cold"
    (found,) = errors(yaml.safe_dump(spec, sort_keys=False))
    assert message in found
    spec["source"]["vcenter"] |= {"vddk_libdir": "/opt/vddk", "datastore_path": "/mnt/ds"}
    spec["source"]["vcenter"]["tls"] = {"ca_file": "/etc/ssl/vc.pem"} if reader is None else {}
    if reader != "datastore_path":
        spec["source"]["vcenter"].pop("datastore_path")
    assert errors(yaml.safe_dump(spec, sort_keys=False)) == []
