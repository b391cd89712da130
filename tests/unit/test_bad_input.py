"""The bad-input corpus, part 1: user mistakes ferry must refuse before it contacts any service
(issue 13). One row per mistake: the command line, the files it finds, its environment, the exit
code and a regex for the one line it prints.

What "one line" means, per command:
- `validate`: one `file:line:col: error: ...` line per problem, then its count line
  (`SPEC: N error(s)`); a case has one problem, so stderr is exactly those two lines.
- every other command: stderr is exactly one line, `error: ...`; an invalid spec prints its
  diagnostic (`file:line:col: error: ...`, as validate does) as that line.
- no traceback, and nothing changed: the state (serial and records) is as before, and no file
  appeared in the working directory (no plan saved, no state created; the event log of an
  apply that failed to connect aside).

Each case runs the CLI in-process (`engine.cli.app._run`, what `ferry` runs), from a fresh
directory holding a valid spec (`spec.yaml`, its password and CA files), a state with one
record (`state/ferry.db`) and, when the case asks, a saved plan (`p.plan`) made from them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from keystoneauth1 import exceptions as ksa_exc

from engine.cli import commands
from engine.cli.app import _run
from engine.cli.plan import missing_state_dir, new_state_line
from engine.model.plan import Plan
from engine.model.state import ResourceRecord, Status
from engine.planner import planfile
from engine.planner.make import spec_digest
from engine.spec.validate import validate_file
from engine.statestore import DEFAULT_PATH, sqlite_at

ROOT = Path(__file__).parents[2]
PLAN_CASE = ROOT / "tests" / "cases" / "first-delta" / "expected.json"

SPEC = """\
version: 1
source:
  vcenter:
    host: 127.0.0.1
    port: 9
    username: migrator@vsphere.local
    password_file: vc.pass
    datacenter: DC0
    tls:
      ca_file: ca.pem
destination:
  cloud: ferry-lab
  region: RegionOne
conversion_hosts:
  - name: ferry-conversion-01
    max_parallel: 2
defaults:
  mode: replicate
  network_map:
    VM Network: {network: lab-vm-network}
  flavor: auto
  power_off: {policy: graceful, timeout: 300}
vms:
  - name: web01
  - name: db01
    flavor: {name: m1.large}
"""
TWO_HOSTS_BROKER = (  # a second conversion host and agents: several hosts share one state
    "  - name: ferry-conversion-02\n"
    "execution:\n  broker: amqp://ferry@127.0.0.1:9/ferry\n  broker_password_file: vc.pass\n"
)
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
BASE_FILES = {"spec.yaml": SPEC, "vc.pass": "secret\n", "ca.pem": CA}
KEY = "plan-key-of-ci"
UUID = "42280000-0000-0000-0000-000000000001"


def spec(old: str, new: str) -> str:
    """The base spec with one edit (the edit must apply)."""
    assert old in SPEC, old
    return SPEC.replace(old, new, 1)


@dataclass(frozen=True)
class Case:
    """One user mistake. `files` are written after the base files (and after the plan is
    saved, so a case can change the spec under a saved plan); `plan` saves p.plan first
    ("fresh", "signed"); `edit` then replaces text in p.plan; `modes` chmods files."""

    id: str
    argv: tuple[str, ...]
    exit: int
    line: str
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    plan: str = ""
    edit: tuple[str, str] | None = None
    modes: dict[str, int] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


V = ("validate", "spec.yaml")
P = ("plan", "spec.yaml")
A = ("apply", "spec.yaml", "--auto-approve")


def v(id: str, old: str, new: str, line: str) -> Case:
    """A spec mistake, as `validate` reports it."""
    return Case(id, V, 1, line, files={"spec.yaml": spec(old, new)})


def p(id: str, old: str, new: str, line: str) -> Case:
    """A spec mistake, as `plan` reports it (before contacting anything)."""
    return Case(id, P, 1, line, files={"spec.yaml": spec(old, new)})


LOC = r"spec\.yaml:\d+:\d+: error: "

CASES = [
    # -- spec keys ---------------------------------------------------------------------------
    v(
        "key-typo-vm",
        "  - name: web01",
        "  - nmae: web01",
        LOC + r"unknown key 'nmae' \(did you mean 'name'\?\)",
    ),
    v("key-typo-top", "vms:", "vm:", LOC + r"unknown key 'vm' \(did you mean 'vms'\?\)"),
    v(
        "key-typo-vcenter",
        "    datacenter: DC0",
        "    datacentre: DC0",
        LOC + r"unknown key 'datacentre' \(did you mean 'datacenter'\?\)",
    ),
    v(
        "key-password-inline",
        "    password_file: vc.pass",
        "    password: hunter2",
        LOC + r"passwords are never written in the spec",
    ),
    v(
        "key-both-passwords",
        "    password_file: vc.pass",
        "    password_file: vc.pass\n    password_env: VC_PASS",
        LOC + r"give exactly one of password_file or password_env",
    ),
    v(
        "key-no-password",
        "    password_file: vc.pass\n",
        "",
        LOC + r"give exactly one of password_file or password_env",
    ),
    v(
        "key-duplicate",
        "    port: 9\n",
        "    port: 9\n    port: 443\n",
        LOC + r"duplicate key 'port'",
    ),
    v(
        "key-missing-source",
        "source:",
        "src:",
        LOC + r"(missing required key 'source'|unknown key 'src')",
    ),
    v("key-missing-version", "version: 1\n", "", LOC + r"missing required key 'version'"),
    v("key-missing-host", "    host: 127.0.0.1\n", "", LOC + r"missing required key 'host'"),
    v(
        "key-no-selector",
        "  - name: web01",
        "  - mode: cold",
        LOC
        + r"each VM entry needs exactly one of name, instance_uuid, moref, pattern \(found none\)",
    ),
    v(
        "key-two-selectors",
        "  - name: web01",
        "  - name: web01\n    moref: vm-12",
        LOC + r"each VM entry needs exactly one of .* \(found name, moref\)",
    ),
    v(
        "key-typo-power-off",
        "power_off: {policy: graceful, timeout: 300}",
        "power_off: {policy: graceful, timout: 300}",
        LOC + r"unknown key 'timout' \(did you mean 'timeout'\?\)",
    ),
    v(
        "key-int-key",
        "    VM Network: {network: lab-vm-network}",
        "    VM Network: {network: lab-vm-network}\n    7: {network: x}",
        LOC + r"keys must be strings, not int 7",
    ),
    # -- types ---------------------------------------------------------------------------------
    v("type-version-2", "version: 1", "version: 2", LOC + r"must be 1; got 2"),
    v("type-version-string", "version: 1", "version: '1'", LOC + r"must be 1; got '1'"),
    v(
        "type-port-string",
        "port: 9",
        "port: https",
        LOC + r"expected integer, got string \"https\"",
    ),
    v(
        "type-port-range",
        "port: 9",
        "port: 70000",
        LOC + r"70000 is greater than the maximum of 65535",
    ),
    v("type-port-zero", "port: 9", "port: 0", LOC + r"0 is less than the minimum of 1"),
    v(
        "type-max-parallel-0",
        "max_parallel: 2",
        "max_parallel: 0",
        LOC + r"0 is less than the minimum of 1",
    ),
    v(
        "type-max-parallel-str",
        "max_parallel: 2",
        "max_parallel: two",
        LOC + r"expected integer, got string",
    ),
    v(
        "type-mode",
        "  mode: replicate",
        "  mode: replicated",
        LOC + r"must be one of 'replicate', 'cutover', 'cold'; got 'replicated'",
    ),
    v(
        "type-policy",
        "policy: graceful",
        "policy: soft",
        LOC + r"must be one of 'graceful', 'hard'; got 'soft'",
    ),
    v("type-timeout-neg", "timeout: 300", "timeout: -5", LOC + r"-5 is less than the minimum of 1"),
    v(
        "type-timeout-float",
        "timeout: 300",
        "timeout: 2.5",
        LOC + r"expected integer, got number 2.5",
    ),
    v(
        "type-flavor",
        "  flavor: auto",
        "  flavor: biggest",
        LOC + r"flavor must be 'auto', 'create' or \{name: <flavor>\}; got 'biggest'",
    ),
    v(
        "type-verify",
        "  flavor: auto",
        "  flavor: auto\n  verify: always",
        LOC + r"verify must be true, false or 'changed'; got 'always'",
    ),
    v(
        "type-vms-mapping",
        "vms:\n  - name: web01\n  - name: db01\n    flavor: {name: m1.large}\n",
        "vms: {name: web01}\n",
        LOC + r"expected array, got object",
    ),
    v(
        "type-vms-empty",
        "vms:\n  - name: web01\n  - name: db01\n    flavor: {name: m1.large}\n",
        "vms: []\n",
        LOC + r"(should be non-empty|must not be empty|\[\] )",
    ),
    v(
        "type-vms-null",
        "vms:\n  - name: web01\n  - name: db01\n    flavor: {name: m1.large}\n",
        "vms:\n",
        LOC + r"expected array, got nothing \(null\)",
    ),
    v(
        "type-security-groups-str",
        "  flavor: auto",
        "  flavor: auto\n  security_groups: default",
        LOC + r"expected array, got string",
    ),
    v(
        "type-cbt-string",
        "  flavor: auto",
        "  flavor: auto\n  enable_cbt: yes please",
        LOC + r"expected boolean, got string",
    ),
    v(
        "type-insecure-string",
        "      ca_file: ca.pem",
        "      insecure: 'no'",
        LOC + r"expected boolean, got string",
    ),
    v(
        "type-devices",
        "    max_parallel: 2",
        "    max_parallel: 2\n    devices: by-path",
        LOC + r"must be one of 'by-id', 'connection-info'; got 'by-path'",
    ),
    v(
        "type-max-downtime",
        "  flavor: auto",
        "  flavor: auto\n  limits: {max_downtime: 0}",
        LOC + r"0 is less than the minimum of 1",
    ),
    v(
        "type-on-failure",
        "policy: graceful",
        "policy: graceful, on_failure: reboot",
        LOC + r"must be one of 'power_on', 'leave_off'; got 'reboot'",
    ),
    v(
        "type-state-backend",
        "version: 1\n",
        "version: 1\nstate: {backend: mysql}\n",
        LOC + r"must be one of 'sqlite', 'postgres'; got 'mysql'",
    ),
    v(
        "type-state-schema",
        "version: 1\n",
        "version: 1\nstate: {backend: postgres, schema: Ferry-1}\n",
        LOC + r"'Ferry-1' is not a valid value \(pattern",
    ),
    v(
        "type-yaml-tab",
        "    port: 9",
        "\tport: 9",
        LOC + r"invalid YAML: .*'\\t'.* \(indent with spaces, not tabs\)",
    ),
    v(
        "type-yaml-unclosed",
        "{network: lab-vm-network}",
        "{network: lab-vm-network",
        LOC + r"invalid YAML: ",
    ),
    v(
        "type-yaml-binary",
        "    port: 9",
        "    port: !!binary aGVsbG8=",
        LOC + r"binary values are not allowed",
    ),
    Case(
        "type-spec-empty",
        V,
        1,
        r"spec\.yaml:1:1: error: the spec is empty: it needs version, source",
        files={"spec.yaml": ""},
    ),
    Case(
        "type-spec-list",
        V,
        1,
        LOC + r"expected object, got array",
        files={"spec.yaml": "- web01\n"},
    ),
    Case(
        "type-spec-not-utf8",
        V,
        1,
        r"error: cannot read spec: .*utf-8",
        files={"spec.yaml": "\udcff"},
    ),
    # -- names ----------------------------------------------------------------------------------
    v(
        "name-vm-listed-twice",
        "  - name: db01",
        "  - name: web01",
        LOC + r"VM name 'web01' is listed twice \(first at line \d+\)",
    ),
    v(
        "name-uuid-twice",
        "  - name: web01",
        "  - instance_uuid: " + UUID + "\n  - instance_uuid: " + UUID,
        LOC + r"VM instance_uuid .* is listed twice",
    ),
    v(
        "name-bad-uuid",
        "  - name: web01",
        "  - instance_uuid: 4228-xyz",
        LOC + r"'4228-xyz' is not a valid UUID",
    ),
    v(
        "name-bad-moref",
        "  - name: web01",
        "  - moref: vm12",
        LOC + r"'vm12' is not a valid VM moref \(vm-123\)",
    ),
    v(
        "name-host-twice",
        "    max_parallel: 2\n",
        "    max_parallel: 2\n  - name: ferry-conversion-01\n",
        LOC + r"conversion host 'ferry-conversion-01' is listed twice",
    ),
    v(
        "name-bad-mac",
        "  - name: db01",
        "  - name: db01\n    nics: [{mac: '00:50:56:zz:00:01'}]",
        LOC + r"'00:50:56:zz:00:01' is not a valid MAC address",
    ),
    v(
        "name-mac-twice",
        "  - name: db01",
        "  - name: db01\n    nics: [{mac: '00:50:56:aa:00:01'}, {mac: '00:50:56:AA:00:01'}]",
        LOC + r"MAC 00:50:56:AA:00:01 appears twice",
    ),
    v(
        "name-bad-tag",
        "  - name: web01",
        "  - pattern: {tag: wave1}",
        LOC + r"'wave1' is not a valid value \(pattern",
    ),
    Case(
        "name-tag-on-esxi",
        V,
        1,
        LOC + r"an ESXi host has no tags \(they live in vCenter\)",
        files={
            "spec.yaml": spec("    datacenter: DC0", "    datacenter: DC0\n    esxi: true").replace(
                "  - name: web01", "  - pattern: {tag: 'wave:1'}"
            )
        },
    ),
    v(
        "name-bad-password-env",
        "    password_file: vc.pass",
        "    password_env: VC-PASS",
        LOC + r"'VC-PASS' is not a valid environment variable name",
    ),
    v(
        "name-env-unset",
        "    username: migrator@vsphere.local",
        "    username: ${FERRY_TEST_UNSET_USER}",
        LOC + r"environment variable FERRY_TEST_UNSET_USER is not set",
    ),
    v(
        "name-bad-thumbprint",
        "      ca_file: ca.pem",
        "      thumbprint: 'AB:CD'",
        LOC + r"'AB:CD' is not a valid SHA-1 thumbprint",
    ),
    v(
        "name-insecure-and-ca",
        "      ca_file: ca.pem",
        "      ca_file: ca.pem\n      insecure: true",
        LOC + r"insecure: true disables verification: drop ca_file/thumbprint or insecure",
    ),
    # -- network --------------------------------------------------------------------------------
    v(
        "net-bad-cidr",
        "    VM Network: {network: lab-vm-network}",
        "    VM Network: {network: new-net, create: {cidr: 10.0.0.0/33}}",
        LOC + r"'10.0.0.0/33' is not a valid CIDR",
    ),
    v(
        "net-cidr-host-bits",
        "    VM Network: {network: lab-vm-network}",
        "    VM Network: {network: new-net, create: {cidr: 10.0.0.1/24}}",
        LOC + r"'10.0.0.1/24' is not a valid CIDR: .*host bits set",
    ),
    v(
        "net-gateway-outside",
        "    VM Network: {network: lab-vm-network}",
        "    VM Network: {network: new-net, create: {cidr: 10.0.0.0/24, gateway: 10.0.1.1}}",
        LOC + r"gateway 10.0.1.1 is outside 10.0.0.0/24",
    ),
    v(
        "net-gateway-bad",
        "    VM Network: {network: lab-vm-network}",
        "    VM Network: {network: new-net, create: {cidr: 10.0.0.0/24, gateway: 10.0.0.300}}",
        LOC + r"'10.0.0.300' is not a valid IP address",
    ),
    v(
        "net-nic-ip-bad",
        "  - name: db01",
        "  - name: db01\n    nics: [{mac: '00:50:56:aa:00:01', ip: 10.1.2}]",
        LOC + r"'10.1.2' is not a valid IP address",
    ),
    v(
        "net-ssh-from-bad",
        "    max_parallel: 2",
        "    max_parallel: 2\n    create: {image: i, flavor: f, network: n, ssh_from: 'anywhere'}",
        LOC + r"'anywhere' is not a valid CIDR",
    ),
    v(
        "net-map-string",
        "    VM Network: {network: lab-vm-network}",
        "    VM Network: lab-vm-network",
        LOC + r"expected object, got string",
    ),
    # -- files and credentials ----------------------------------------------------------------
    Case(
        "file-spec-missing",
        ("validate", "nope.yaml"),
        1,
        r"error: cannot read spec: \[Errno 2\] No such file or directory: 'nope.yaml'",
    ),
    Case(
        "file-spec-directory",
        ("validate", "state"),
        1,
        r"error: cannot read spec: \[Errno 21\] Is a directory: 'state'",
    ),
    Case(
        "file-spec-unreadable",
        V,
        1,
        r"error: cannot read spec: \[Errno 13\] Permission denied",
        modes={"spec.yaml": 0o000},
    ),
    Case(
        "cred-password-file-missing",
        V,
        1,
        LOC + r"password file 'vc.pass': No such file or directory",
        remove=("vc.pass",),
    ),
    Case(
        "cred-password-file-world",
        V,
        1,
        LOC + r"password file 'vc.pass' can be read by others \(mode 0644\): chmod 600 vc.pass",
        modes={"vc.pass": 0o644},
    ),
    Case(
        "cred-password-file-dir",
        V,
        1,
        LOC + r"password file 'vc.pass': Is a directory",
        files={"vc.pass/x": ""},
        remove=("vc.pass",),
    ),
    Case(
        "cred-password-file-unreadable",
        V,
        1,
        LOC + r"password file 'vc.pass': Permission denied",
        modes={"vc.pass": 0o000},
    ),
    Case(
        "tls-ca-missing",
        V,
        1,
        LOC + r"CA file 'ca.pem': No such file or directory",
        remove=("ca.pem",),
    ),
    Case(
        "tls-ca-not-pem",
        V,
        1,
        LOC + r"CA file 'ca.pem' holds no PEM certificate",
        files={"ca.pem": "not a certificate\n"},
    ),
    Case(
        "tls-ca-der",
        V,
        1,
        LOC + r"CA file 'ca.pem' holds no PEM certificate",
        files={"ca.pem": "0\x82\x03"},
    ),
    v(
        "file-firstboot-missing",
        "  - name: db01",
        "  - name: db01\n    conversion: {firstboot: [setup.sh]}",
        LOC + r"first-boot script 'setup.sh' is not a file",
    ),
    # -- the same mistakes through plan and apply: one diagnostic line, nothing contacted -------
    p(
        "plan-key-typo",
        "  - name: web01",
        "  - nmae: web01",
        LOC + r"unknown key 'nmae' \(did you mean 'name'\?\)",
    ),
    p(
        "plan-mode",
        "  mode: replicate",
        "  mode: live",
        LOC + r"must be one of 'replicate', 'cutover', 'cold'; got 'live'",
    ),
    p(
        "plan-env-unset",
        "    host: 127.0.0.1",
        "    host: ${FERRY_TEST_UNSET_HOST}",
        LOC + r"environment variable FERRY_TEST_UNSET_HOST is not set",
    ),
    Case(
        "plan-password-world",
        P,
        1,
        LOC + r"password file 'vc.pass' can be read by others",
        modes={"vc.pass": 0o640},
    ),
    Case(
        "plan-ca-missing",
        P,
        1,
        LOC + r"CA file 'ca.pem': No such file or directory",
        remove=("ca.pem",),
    ),
    Case(
        "plan-spec-missing",
        ("plan", "wave1.yaml"),
        1,
        r"error: cannot read spec: \[Errno 2\] No such file or directory: 'wave1.yaml'",
    ),
    Case(
        "plan-spec-empty", P, 1, LOC + r"the spec is empty", files={"spec.yaml": "# nothing yet\n"}
    ),
    Case(
        "apply-key-typo",
        A,
        1,
        LOC + r"unknown key 'nmae'",
        files={"spec.yaml": spec("  - name: web01", "  - nmae: web01")},
    ),
    Case(  # break-it 16b L2: was "is not a ferry plan: [Errno 21] Is a directory"
        "apply-a-directory",
        ("apply", "plans", "--auto-approve"),
        1,
        r"error: plans is a directory, not a saved plan file$",
        files={"plans/wave1.yaml": "version: 1\n"},
    ),
    Case(
        "apply-spec-missing",
        ("apply", "wave1.yml", "--auto-approve"),
        1,
        r"error: cannot read spec: \[Errno 2\]",
    ),
    Case(
        "state-spec-invalid",
        ("state", "list", "--spec", "spec.yaml"),
        1,
        LOC + r"must be 1; got 3",
        files={"spec.yaml": spec("version: 1", "version: 3")},
    ),
    Case(
        "plan-sqlite-several-hosts",
        P,
        1,
        r"error: 2 conversion hosts with execution\.broker need the shared PostgreSQL state "
        r"\(.*\), not the SQLite file state/ferry\.db: one machine's file",
        files={"spec.yaml": spec("defaults:", TWO_HOSTS_BROKER + "defaults:")},
    ),
    Case(
        "apply-sqlite-several-hosts",
        A,
        1,
        r"error: 2 conversion hosts with execution\.broker need the shared PostgreSQL state",
        files={"spec.yaml": spec("defaults:", TWO_HOSTS_BROKER + "defaults:")},
    ),
    Case(
        "lab-fault-read-rate-zero",
        ("lab", "fault", "web01", "--read-rate-mib", "0", "--dir", "lab"),
        1,
        r"error: read rate 0 MiB/s is not above 0 and at most 100000 MiB/s",
    ),
    Case(  # scale14: a FileNotFoundError traceback on a lab directory that does not exist
        "lab-fault-lab-not-up",
        ("lab", "fault", "web01", "--read-delay-ms", "5", "--dir", "nolab"),
        1,
        r"error: the lab in .*/nolab is not up: run `ferry lab up`",
    ),
    Case(
        "lab-fault-read-rate-and-delay",
        ("lab", "fault", "web01", "--read-rate-mib", "150", "--read-delay-ms", "5"),
        1,
        r"error: give one of --read-error-rate RATE, --read-delay-ms MS, --read-rate-mib MIBS, ",
    ),
    # -- command-line options (usage errors: exit 2) --------------------------------------------
    Case(
        "opt-unknown",
        ("plan", "spec.yaml", "--dry-run"),
        2,
        r"error: No such option: --dry-run .*\(see `.* plan --help`\)",
    ),
    Case(
        "opt-typo",
        ("apply", "spec.yaml", "--auto-aprove"),
        2,
        r"error: No such option: --auto-aprove \(Possible options: --auto-approve\)",
    ),
    Case(
        "opt-missing-arg",
        ("plan",),
        2,
        r"error: Missing argument 'spec'\. \(see `ferry plan --help`\)",
    ),
    Case("opt-unknown-command", ("migrate", "spec.yaml"), 2, r"error: No such command 'migrate'\."),
    Case(
        "opt-parallelism-0",
        ("apply", "spec.yaml", "--parallelism", "0"),
        2,
        r"error: Invalid value for '--parallelism': .*1",
    ),
    Case(
        "opt-parallelism-huge",
        ("apply", "spec.yaml", "--parallelism", "10000"),
        2,
        r"error: Invalid value for '--parallelism': .*256",
    ),
    Case(
        "opt-parallelism-word",
        ("apply", "spec.yaml", "--parallelism", "many"),
        2,
        r"error: Invalid value for '--parallelism': .*valid integer",
    ),
    Case(
        "opt-out-no-value",
        ("plan", "spec.yaml", "--out"),
        2,
        r"error: Option '--out' requires an argument",
    ),
    Case(  # checked before the refresh, not after minutes of it (break-it 12c: a traceback)
        "opt-out-no-directory",
        ("plan", "spec.yaml", "--out", "no-such-dir/p.plan"),
        1,
        r"error: cannot save the plan to no-such-dir/p\.plan: no directory no-such-dir",
    ),
    Case(
        "opt-out-is-a-directory",
        ("plan", "spec.yaml", "--out", "state"),
        1,
        r"error: cannot save the plan to state: it is a directory",
    ),
    Case(
        "opt-graph-format",
        ("graph", "p.plan", "--format", "png"),
        2,
        r"error: Invalid value for '--format': .*'png' is not one of 'dot', 'mermaid'",
        plan="fresh",
    ),
    Case("opt-state-cmd", ("state", "rm", "vm.web01"), 2, r"error: No such command 'rm'\."),
    Case(
        "opt-extra-arg",
        ("validate", "spec.yaml", "other.yaml"),
        2,
        r"error: Got unexpected extra argument\(s\) \(other\.yaml\)",
    ),
    # -- targets --------------------------------------------------------------------------------
    Case(
        "target-bad-syntax",
        (*P, "--target", "web01"),
        1,
        r"error: not an address: 'web01' \(a VM's address is vm\.web01; a disk's "
        r"vm\.web01\.disk\[2000\]\)",
    ),
    Case(
        "target-bad-part",
        (*P, "--target", "vm.web01.dsk[2000]"),
        1,
        r"error: .*vm\.web01\.dsk\[2000\]",
    ),
    Case(
        "target-bad-key",
        (*P, "--target", "vm.web01.disk[two]"),
        1,
        r"error: .*vm\.web01\.disk\[two\]",
    ),
    Case(
        "target-with-plan",
        ("apply", "p.plan", "--target", "vm.web01"),
        1,
        r"error: --target selects from a spec; a saved plan is applied whole",
        plan="fresh",
    ),
    Case(
        "adopt-lineage-not-a-uuid",
        (*P, "--adopt-lineage", "prod-state"),
        1,
        r"error: --adopt-lineage 'prod-state' is not a state lineage \(a UUID, .*\)",
    ),
    Case(
        "adopt-lineage-with-plan",
        ("apply", "p.plan", "--adopt-lineage", "0b9c7d1e-9a8e-4c1f-8d2a-5e6f7a8b9c0d"),
        1,
        r"error: --adopt-lineage goes with a spec; a saved plan adopts what it was planned to "
        r"\(make it with `ferry plan --adopt-lineage LINEAGE --out PLAN`\)",
        plan="fresh",
    ),
    Case(
        "target-state-show-missing",
        ("state", "show", "vm.web02"),
        1,
        r"error: vm\.web02 is not in the state \(`ferry state list` shows what is\)",
    ),
    Case("target-state-show-bad", ("state", "show", "web01"), 1, r"error: .*'web01'"),
    # -- plan files -----------------------------------------------------------------------------
    Case(
        "plan-file-missing",
        ("apply", "wave1.plan"),
        1,
        r"error: wave1\.plan is not a ferry plan: .*No such file",
    ),
    Case(
        "plan-file-not-json",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan is not a ferry plan: ",
        files={"p.plan": "Plan: 3 to create\n"},
    ),
    Case(
        "plan-file-empty",
        ("show", "p.plan"),
        1,
        r"error: p\.plan is not a ferry plan: ",
        files={"p.plan": ""},
    ),
    Case(
        "plan-file-list",
        ("graph", "p.plan"),
        1,
        r"error: p\.plan is not a ferry plan: expected a JSON object, got list",
        files={"p.plan": "[]"},
    ),
    Case(
        "plan-file-truncated",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan is not a ferry plan: ",
        plan="fresh",
        edit=('"changes"', '"changes" ]'),
    ),
    Case(
        "plan-file-edited-action",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan was changed after it was saved",
        plan="fresh",
        edit=('"action": "update"', '"action": "delete"'),
    ),
    Case(
        "plan-file-edited-show",
        ("show", "p.plan"),
        1,
        r"error: p\.plan was changed after it was saved",
        plan="fresh",
        edit=('"action": "update"', '"action": "delete"'),
    ),
    Case(
        "plan-file-seal-removed",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan (is not sealed|.*integrity)",
        plan="fresh",
        edit=('"integrity"', '"integrity_"'),
    ),
    Case(
        "plan-file-format",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan was changed after it was saved",
        plan="fresh",
        edit=('"format_version": 1,', '"format_version": 9,'),
    ),
    Case(
        "plan-file-signed-no-key",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan is signed: set FERRY_PLAN_KEY to the key it was signed with",
        plan="signed",
    ),
    Case(
        "plan-file-wrong-key",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan is not signed with the key in FERRY_PLAN_KEY: refused",
        plan="signed",
        env={"FERRY_PLAN_KEY": "another-key"},
    ),
    Case(
        "plan-file-unsigned-with-key",
        ("apply", "p.plan"),
        1,
        r"error: p\.plan is not signed, and FERRY_PLAN_KEY is set: refused",
        plan="fresh",
        env={"FERRY_PLAN_KEY": KEY},
    ),
    Case(
        "plan-file-spec-gone",
        ("apply", "p.plan"),
        1,
        r"error: the spec this plan was made from \(spec\.yaml, relative to /\S+\) is not found: "
        r"pass --spec PATH",
        plan="fresh",
        remove=("spec.yaml",),
    ),
    Case(
        "plan-file-spec-option-missing",
        ("apply", "p.plan", "--spec", "wave1.yaml"),
        1,
        r"error: --spec wave1\.yaml: no such file",
        plan="fresh",
    ),
    Case(
        "plan-file-spec-changed",
        ("apply", "p.plan"),
        1,
        r"error: the spec changed since this plan was made: run `ferry plan` again",
        plan="fresh",
        files={"spec.yaml": spec("max_parallel: 2", "max_parallel: 3")},
    ),
    Case(
        "plan-file-other-spec",
        ("apply", "p.plan", "--spec", "other.yaml"),
        1,
        r"error: --spec other\.yaml is not the spec this plan was made from \(its content "
        r"differs\): pass that spec, or plan again",
        plan="fresh",
        files={"other.yaml": spec("  - name: db01", "  - name: db02")},
    ),
    Case(
        "plan-file-spec-now-invalid",
        ("apply", "p.plan"),
        1,
        LOC + r"unknown key 'nmae'",
        plan="fresh",
        files={"spec.yaml": spec("  - name: web01", "  - nmae: web01")},
    ),
    Case(
        "plan-file-state-changed",
        ("apply", "p.plan"),
        1,
        r"error: the state changed since this plan was made \(serial \d+ → \d+\): run `ferry plan`",
        plan="stale-state",
    ),
    Case(  # planned on an empty state, applied after something wrote it (not another state)
        "plan-file-state-written-since-empty",
        ("apply", "p.plan"),
        1,
        r"error: the state changed since this plan was made \(serial 0 → 1\): run `ferry plan`",
        plan="empty-state",
    ),
    Case(
        "plan-file-state-elsewhere",
        ("apply", "p.plan", "--state", "state/other.db"),
        1,
        r"error: the state state/other\.db is not the one this plan was made from \(another "
        r"lineage; it is empty\): pass the plan's --state, or plan again",
        plan="fresh",
    ),
    Case(
        "plan-file-spec-option-folder",
        ("apply", "p.plan", "--spec", "state"),
        1,
        r"error: --spec state: a folder, not a spec file",
        plan="fresh",
    ),
    Case(
        "spec-with-spec-option",
        ("apply", "spec.yaml", "--spec", "spec.yaml", "--auto-approve"),
        1,
        r"error: --spec goes with a saved plan; spec\.yaml is a spec itself \(drop --spec, or "
        r"apply the plan made from it\)",
    ),
    Case(
        "plan-file-has-errors",
        ("apply", "p.plan"),
        1,
        r"error: no flavor fits vm\.web01: fix it and plan again",
        plan="with-error",
    ),
    Case(
        "plan-file-future-action",
        ("apply", "p.plan"),
        1,
        r"error: .*(this ferry cannot apply|not a ferry plan|changed after)",
        plan="fresh",
        edit=('"action": "update"', '"action": "teleport"'),
    ),
    Case(
        "plan-file-directory",
        ("show", "state"),
        1,
        r"error: state is a directory, not a saved plan file",
    ),
    Case(
        "tls-ca-corrupt-apply",
        ("apply", "p.plan"),
        1,
        r"error: the vCenter CA file ca\.pem is not a PEM certificate file: ",
        plan="fresh",
    ),
    Case(
        "tls-ca-corrupt-plan",
        P,
        1,
        r"error: the vCenter CA file ca\.pem is not a PEM certificate file: ",
    ),
    # -- state ----------------------------------------------------------------------------------
    Case(  # break-it 16c L4: a typo in --state made its directory and a new state there
        "state-directory-missing",
        (*A, "--state", "nodir/s.db"),
        1,
        r"error: state nodir/s\.db: its directory nodir does not exist \(ferry creates the "
        r"state file, not its directory\): create it, or fix the state's path",
    ),
    Case(
        "state-none",
        ("state", "list", "--state", "nothing.db"),
        1,
        r"error: .*nothing\.db.*nothing has been applied there yet",
    ),
    Case(
        "state-show-none",
        ("state", "show", "vm.web01", "--state", "nothing.db"),
        1,
        r"error: .*nothing has been applied there yet",
    ),
    Case(
        "state-unlock-none",
        ("state", "unlock", "--state", "nothing.db"),
        1,
        r"error: .*nothing has been applied there yet",
    ),
    Case(
        "state-url-password",
        ("state", "list", "--state", "postgresql://ferry:pw@db/ferry"),
        1,
        r"error: a state URL on the command line must not carry a password",
    ),
    Case(
        "state-env-empty",
        ("state", "list", "--state", "env:FERRY_TEST_NO_DSN"),
        1,
        r"error: the state is in PostgreSQL but \$FERRY_TEST_NO_DSN is empty",
    ),
    Case("state-not-sqlite", ("state", "list", "--state", "spec.yaml"), 1, r"error: .*spec\.yaml"),
    Case(
        "state-migrate-same",
        ("state", "migrate", "--to", "state/ferry.db"),
        1,
        r"error: the source and the destination are the same state",
    ),
    Case(
        "state-dsn-env-empty",
        ("plan", "spec.yaml"),
        1,
        r"error: the state is in PostgreSQL but \$FERRY_STATE_DSN is empty",
        files={"spec.yaml": spec("version: 1\n", "version: 1\nstate: {backend: postgres}\n")},
    ),
    *(
        Case(
            f"state-retry-seconds-{name}",
            ("plan", "spec.yaml", "--state", "env:FERRY_TEST_DSN"),
            1,
            rf"error: FERRY_STATE_RETRY_SECONDS='{re.escape(value)}' is not a number of seconds "
            r">= 0 \(how long a lost state connection is retried; default 30, 0: not retried\)",
            env={
                "FERRY_TEST_DSN": "host=127.0.0.1 port=9 dbname=ferry",
                "FERRY_STATE_RETRY_SECONDS": value,
            },
        )
        for name, value in (("word", "soon"), ("negative", "-5"), ("nan", "nan"))
    ),
]


def _plan(digest: str, lineage: str, serial: int, *, error: bool = False) -> Plan:
    data = json.loads(PLAN_CASE.read_text())
    data.pop("exit_code")
    data |= {"created_at": "2026-01-01T00:00:00Z", "spec_digest": digest}
    data["state"] = {"lineage": lineage, "serial": serial}
    if error:
        data["diagnostics"] = [{"severity": "error", "summary": "no flavor fits vm.web01"}]
    return planfile.from_json(data)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))


def _setup(root: Path, case: Case) -> None:
    _write(root, BASE_FILES)
    (root / "vc.pass").chmod(0o600)
    store = sqlite_at(root / "state" / "ferry.db").open()
    store.write([ResourceRecord("vm.web01.disk[2000]", "volume", Status.READY, {"id": "v1"})], [])
    current = store.read()
    store.close()
    if case.plan:
        loaded = validate_file(root / "spec.yaml", {})
        digest = spec_digest(dict(loaded.data))
        lineage, serial = current.lineage, current.serial
        if case.plan == "empty-state":  # as planned before the state's first write
            lineage, serial = "lineage-of-an-empty-state", 0
        saved = _plan(digest, lineage, serial, error=case.plan == "with-error")
        env = {planfile.KEY_ENV: KEY} if case.plan == "signed" else {}
        planfile.save(saved, root / "p.plan", root / "spec.yaml", env)
    if case.plan == "stale-state":
        store = sqlite_at(root / "state" / "ferry.db").open()
        store.write([ResourceRecord("vm.web01.port[0]", "port", Status.READY, {})], [])
        store.close()
    for name in case.remove:
        path = root / name
        path.unlink() if path.is_file() else None
    _write(root, case.files)
    if case.edit:
        text = (root / "p.plan").read_text()
        assert case.edit[0] in text, case.edit
        (root / "p.plan").write_text(text.replace(*case.edit, 1))
    for name, mode in case.modes.items():
        (root / name).chmod(mode)


def _snapshot(root: Path) -> tuple[object, ...]:
    """The state's serial and records, and the files under root (sqlite's -wal/-shm aside, and
    state/logs: an apply that fails to connect logs its attempt, which is a record, not a
    change)."""
    store = sqlite_at(root / "state" / "ferry.db").open(create=False)
    current = store.read()
    store.close()
    records = sorted(
        (a, r.status.value, json.dumps(dict(r.attributes))) for a, r in current.resources.items()
    )
    files = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.name.endswith(("-wal", "-shm", "-journal")) and "logs" not in p.parts
    )
    return current.lineage, current.serial, records, files


def _isolate(monkeypatch: pytest.MonkeyPatch, root: Path, env: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith(("FERRY_", "OS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(root / "no-clouds.yaml"))
    monkeypatch.setenv("COLUMNS", "300")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(root)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if case.modes and os.geteuid() == 0 and any(m & 0o444 == 0 for m in case.modes.values()):
        pytest.skip("root reads files whatever their mode")
    _setup(tmp_path, case)
    _isolate(monkeypatch, tmp_path, case.env)
    before = _snapshot(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ferry", *case.argv])
    code = _run()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    if case.argv[0] == "validate" and case.exit == 1:
        assert len(lines) == 2, err
        assert lines[1] == f"{case.argv[1]}: 1 error(s)", err
    else:
        assert len(lines) == 1, err
    assert re.fullmatch(case.line + r".*", lines[0]), lines[0]
    assert code == case.exit, (code, err)
    assert _snapshot(tmp_path) == before


def test_a_plan_says_a_new_state_and_a_missing_directory(tmp_path: Path) -> None:
    """break-it 16c L4: a plan on a state path that does not exist said nothing of it."""
    (tmp_path / "here").mkdir()
    new = new_state_line(sqlite_at(tmp_path / "here" / "s.db"))
    assert (
        new == f"new state at {tmp_path}/here/s.db (no such file yet: the first apply creates it)"
    )
    typo = new_state_line(sqlite_at(tmp_path / "nodir" / "s.db"))
    assert typo.startswith(f"new state at {tmp_path}/nodir/s.db: no such file, and its directory")
    assert "apply refuses it" in typo
    (tmp_path / "here" / "s.db").write_bytes(b"")
    assert new_state_line(sqlite_at(tmp_path / "here" / "s.db")) == ""
    # ferry's default state/ferry.db: its folder is made by the first apply, as before
    assert missing_state_dir(sqlite_at(DEFAULT_PATH)) is None


def test_every_case_is_named_once() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 90


def test_a_cloud_api_refusing_connections_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cloud API that goes down where no step wraps the call (stop 21's CI: cinder-api gone,
    `ferry plan` listing volume types) ends as one line naming the URL and the reason, not
    keystoneauth's traceback."""
    refused = (
        "Unable to establish connection to http://127.0.0.1:43803/v3/types: HTTPConnectionPool("
        "host='127.0.0.1', port=43803): Max retries exceeded with url: /v3/types (Caused by "
        "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=43803): Failed to establish "
        'a new connection: [Errno 111] Connection refused"))'
    )

    def down(**_: object) -> int:
        raise ksa_exc.ConnectFailure(refused)

    monkeypatch.setattr(commands, "register", lambda _names=None: down)
    monkeypatch.setattr(sys, "argv", ["ferry", "plan", "spec.yaml"])
    assert _run() == 1
    _, err = capsys.readouterr()
    assert err == "error: cannot reach http://127.0.0.1:43803/v3/types: Connection refused\n"
