"""The agent digest (break-it 14c F4): an agent compares what it uses of the spec, not the whole
spec, with the coordinator's, so an edit only the coordinator uses (a timeout, a VM's mode,
power-off, mappings, limits, conversion settings, another host) keeps the agents running and
taking tasks; an edit of what the agent uses still gets its one-line refusal. What the agent
uses is read off `ferry agent` itself: every field it reads of a spec is in the digest, and
nothing else is."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from engine.cli import agent as agent_cli
from engine.cli import apply as apply_cli
from engine.executor import remote
from engine.executor.remote import AGENT_FIELDS, HOST_FIELDS, agent_digest, agent_digests
from engine.providers.openstack import compute, read

Edit = Callable[[dict[str, Any]], None]
SPEC: dict[str, Any] = {
    "version": 1,
    "source": {
        "lab_dir": "/lab",
        "vcenter": {
            "host": "vc.example",
            "port": 443,
            "username": "ferry",
            "password_file": "/run/vc.pw",
            "datacenter": "DC0",
            "tls": {"ca_file": "/etc/vc.pem"},
            "reads_per_esxi_host": 2,
        },
    },
    "destination": {"cloud": "prod", "region": "RegionOne"},
    "conversion_hosts": [
        {"name": "conv-a", "max_parallel": 2, "devices": "connection-info"},
        {"name": "conv-b", "max_parallel": 2, "availability_zone": "az1"},
    ],
    "execution": {"broker": "amqp://ferry@mq/ferry", "broker_password_file": "/run/mq.pw"},
    "state": {"backend": "postgres", "dsn_env": "DSN", "schema": "s"},
    "defaults": {"mode": "replicate", "network_map": {"VM Network": {"network": "n1"}}},
    "vms": [{"name": "web01"}],
}


def _set(*path_and_value: Any) -> Edit:
    """An edit setting the value (last) at the path (the keys and list indexes before it)."""
    path, value = path_and_value[:-1], path_and_value[-1]

    def edit(spec: dict[str, Any]) -> None:
        node: Any = spec
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
        node[path[-1]] = value

    return edit


COORDINATOR_ONLY: dict[str, Edit] = {
    "execution.timeout": _set("execution", "timeout", 900),
    "a VM's mode": _set("vms", 0, "mode", "cutover"),
    "power_off": _set("defaults", "power_off", {"policy": "hard"}),
    "flavor": _set("vms", 0, "flavor", {"name": "m1.large"}),
    "network_map": _set("defaults", "network_map", {"VM Network": {"network": "n2"}}),
    "volume_type_map": _set("defaults", "volume_type_map", {"ds": "fast"}),
    "limits": _set("defaults", "limits", {"max_downtime": 60}),
    "conversion settings": _set("defaults", "conversion", {"firstboot": ["/x.sh"], "debug": True}),
    "a VM pinned": _set("vms", 0, "conversion_host", "conv-b"),
    "another host's max_parallel": _set("conversion_hosts", 1, "max_parallel", 8),
    "this host's availability_zone": _set("conversion_hosts", 0, "availability_zone", "az2"),
    "this host's create": _set("conversion_hosts", 0, "create", {"image": "centos"}),
    "reads_per_esxi_host": _set("source", "vcenter", "reads_per_esxi_host", 4),
    "datacenter": _set("source", "vcenter", "datacenter", "DC1"),
    "the state": _set("state", "schema", "other"),
    "a VM added": lambda s: s["vms"].append({"name": "db01"}),
    "a host added": lambda s: s["conversion_hosts"].append({"name": "conv-c"}),
}
AGENT_USED: dict[str, Edit] = {
    "vCenter host": _set("source", "vcenter", "host", "vc2.example"),
    "vCenter port": _set("source", "vcenter", "port", 8443),
    "vCenter user": _set("source", "vcenter", "username", "other"),
    "vCenter password file": _set("source", "vcenter", "password_file", "/other.pw"),
    "vCenter CA": _set("source", "vcenter", "tls", {"ca_file": "/other.pem"}),
    "reader": _set("source", "reader", "https"),
    "lab_dir": _set("source", "lab_dir", "/other-lab"),
    "vddk_libdir": _set("source", "vcenter", "vddk_libdir", "/opt/vddk"),
    "datastore_path": _set("source", "vcenter", "datastore_path", "/mnt/ds"),
    "destination cloud": _set("destination", "cloud", "staging"),
    "destination region": _set("destination", "region", "RegionTwo"),
    "destination project": _set("destination", "project", "p2"),
    "broker": _set("execution", "broker", "amqps://ferry@mq/ferry"),
    "broker password file": _set("execution", "broker_password_file", "/other.pw"),
    "broker CA": _set("execution", "tls", {"ca_file": "/mq.pem"}),
    "this host's max_parallel": _set("conversion_hosts", 0, "max_parallel", 4),
    "this host's devices": _set("conversion_hosts", 0, "devices", "by-id"),
    "this host gone": lambda s: s["conversion_hosts"].pop(0),
}


def _edited(edit: Edit) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    edit(spec)
    return spec


@pytest.mark.parametrize("name", sorted(COORDINATOR_ONLY))
def test_an_edit_only_the_coordinator_uses_keeps_the_agents_digest(name: str) -> None:
    """conv-a's digest; every host's, but conv-b's for an edit of conv-b's own entry."""
    before, after = agent_digests(SPEC), agent_digests(_edited(COORDINATOR_ONLY[name]))
    assert after["conv-a"] == before["conv-a"]
    if not name.startswith("another host's"):
        assert {h: after[h] for h in before} == before


@pytest.mark.parametrize("name", sorted(AGENT_USED))
def test_an_edit_of_what_the_agent_uses_changes_its_digest(name: str) -> None:
    assert agent_digest(_edited(AGENT_USED[name]), "conv-a") != agent_digest(SPEC, "conv-a")


def test_each_host_has_its_own_digest_and_key_order_does_not_matter() -> None:
    digests = agent_digests(SPEC)
    assert set(digests) == {"conv-a", "conv-b"} and digests["conv-a"] != digests["conv-b"]
    assert all(len(d) == 64 for d in digests.values())
    reordered = {k: SPEC[k] for k in reversed(list(SPEC))}
    assert agent_digests(reordered) == digests
    assert remote.Remote(remote.Broker("amqp://x", "pw"), digests).digest("conv-z") == ""


# -- what `ferry agent` reads of a spec: all of it is in the digest, nothing else ---------------

Read = tuple[str | int, ...]


class _SeenDict(dict[str, Any]):
    """A spec mapping that records the path of every key read (get, [], in)."""

    def __init__(self, data: dict[str, Any], path: Read, reads: set[Read]) -> None:
        super().__init__({k: _seen(v, (*path, k), reads) for k, v in data.items()})
        self.path, self.reads = path, reads

    def __getitem__(self, key: str) -> Any:
        self.reads.add((*self.path, key))
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.reads.add((*self.path, key))
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.reads.add((*self.path, str(key)))
        return super().__contains__(key)


def _seen(value: Any, path: Read, reads: set[Read]) -> Any:
    if isinstance(value, dict):
        return _SeenDict(value, path, reads)
    if isinstance(value, list):
        return [_seen(v, (*path, i), reads) for i, v in enumerate(value)]
    return value


class _Loaded:
    def __init__(self, data: Any) -> None:
        self.data = data


class _Server:
    id = "server-a"


def _agent_reads(
    spec: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> set[Read]:
    """The paths `ferry agent --host conv-a` reads of `spec` on its way to serving (the
    vCenter, the cloud and the broker not reached), its own conversion_hosts entry as
    ("conversion_host", key); another entry's name, read to find its own, left out."""
    reads: set[Read] = set()
    monkeypatch.setattr(agent_cli, "load_spec", lambda _p: _Loaded(_seen(spec, (), reads)))
    monkeypatch.setattr(agent_cli, "session", lambda _target: _NoSession())
    monkeypatch.setattr(read, "connect", lambda *_a, **_k: object())
    monkeypatch.setattr(compute, "conversion_server", lambda *_a: _Server())
    monkeypatch.setattr(agent_cli, "check_broker", lambda _app: None)
    monkeypatch.setattr(agent_cli, "log_with_time", lambda: None)
    monkeypatch.setattr(agent_cli, "serve", lambda *_a, **_k: 0)
    monkeypatch.setattr(agent_cli, "agent_digest", lambda *_a: "d")  # reads AGENT_FIELDS itself
    real_seams = apply_cli.host_seams

    def seams(spec: dict[str, Any], entry: dict[str, Any], si: Any) -> tuple[Any, Any]:
        _sources, devices = real_seams(spec, entry, si)  # what it reads; nothing checked
        return _Checked(), devices

    monkeypatch.setattr(agent_cli, "host_seams", seams)
    monkeypatch.setenv("VC_PW", "secret")
    with pytest.raises(typer.Exit) as ended:
        agent_cli.agent("conv-a", tmp_path / "spec.yaml", tmp_path / "checkpoints")
    assert ended.value.exit_code == 0
    own = next(i for i, h in enumerate(spec["conversion_hosts"]) if h["name"] == "conv-a")
    found: set[Read] = set()
    for path in reads:
        if path[:1] == ("conversion_hosts",) and len(path) > 2:
            if path[1] == own:
                found.add(("conversion_host", *path[2:]))
            elif path[2:] != ("name",):
                found.add(path)
        else:
            found.add(path)
    return found


class _NoSession:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


class _Checked:
    def check(self) -> None:
        return None


def _fields() -> set[Read]:
    """The digest's fields as paths: AGENT_FIELDS' leaves, HOST_FIELDS as conversion_host's."""

    def leaves(fields: dict[str, Any], path: Read) -> set[Read]:
        out: set[Read] = set()
        for key, inner in fields.items():
            out |= leaves(inner, (*path, key)) if inner else {(*path, key)}
        return out

    return leaves(AGENT_FIELDS, ()) | {("conversion_host", k) for k in HOST_FIELDS}


# read by `ferry agent` and not used there: broker_from_spec reads the whole execution block;
# Broker.timeout is the coordinator's (remote._Waiter's silence, replacement's wait)
READ_NOT_USED = {("execution", "timeout")}


def _covered(path: Read, fields: set[Read]) -> bool:
    """`path` is a field, inside one (a part of its value), or a mapping holding some."""
    return any(path[: len(f)] == f or f[: len(path)] == path for f in fields)


def test_every_field_the_agent_reads_is_in_its_digest_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four readers (the lab's files, https with a CA, VDDK, a datastore mount), the secrets
    from a file and from a variable: the union of what `ferry agent` reads is exactly the
    digest's fields."""
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    lab = _edited(_set("source", "vcenter", "password_file", str(pw)))
    lab["execution"]["broker_password_file"] = str(pw)
    https = _edited(_set("source", "reader", "https"))
    del https["source"]["lab_dir"], https["source"]["vcenter"]["password_file"]
    https["source"]["vcenter"]["password_env"] = "VC_PW"
    https["execution"] = {"broker": "amqps://ferry@mq/ferry", "broker_password_env": "VC_PW"}
    https["execution"]["tls"] = {"ca_file": str(pw)}
    https["destination"]["project"] = "p"
    vddk = copy.deepcopy(https)
    vddk["source"] = {"reader": "vddk", "vcenter": {**https["source"]["vcenter"]}}
    vddk["source"]["vcenter"] |= {"vddk_libdir": "/opt/vddk", "datastore_path": "/mnt/ds"}
    mounted = copy.deepcopy(https)  # no reader: datastore_path, as its mount says
    mounted["source"] = {"vcenter": {**https["source"]["vcenter"], "datastore_path": "/mnt/ds"}}
    fields = _fields()
    seen: set[Read] = set()
    for spec in (lab, https, vddk, mounted):
        reads = _agent_reads(spec, tmp_path, monkeypatch)
        assert {p for p in reads - READ_NOT_USED if not _covered(p, fields)} == set()
        seen |= reads
    read_fields = {f for f in fields if any(p[: len(f)] == f for p in seen)}
    assert read_fields == fields  # and each field of the digest is read
