"""Validating a migration spec: JSON Schema (schemas/spec.v1.json) plus semantic checks, every
problem reported at once as a Diagnostic with file:line:col and the JSON path."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from engine.diagnostics import Diagnostic, Location, Path, Severity, has_errors, sort_key
from engine.spec.load import Loaded, load_text

SELECTORS = ("name", "instance_uuid", "moref", "pattern")
THUMBPRINT = "^([0-9A-Fa-f]{2}:){19}[0-9A-Fa-f]{2}$"
_PATTERN_NAMES = {
    "^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$": "MAC address (00:50:56:aa:bb:cc)",
    THUMBPRINT: "SHA-1 thumbprint (20 hex pairs joined by ':')",
    "^vm-[0-9]+$": "VM moref (vm-123)",
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$": "UUID",
    "^[A-Za-z_][A-Za-z0-9_]*$": "environment variable name",
    "^amqps?://[^:@/\\s]+@[^:@/\\s]+(:[0-9]{1,5})?(/[^\\s/]*)?$": (
        "broker URL: amqp://USER@HOST:PORT/VHOST or amqps://..., without a password "
        "(give broker_password_file or FERRY_BROKER_PASSWORD)"
    ),
}


@cache
def schema() -> dict[str, Any]:
    """The spec schema shipped with ferry."""
    text = resources.files("engine").joinpath("schemas/spec.v1.json").read_text()
    return dict(json.loads(text))


def validate_file(path: FsPath, env: dict[str, str] | None = None) -> Loaded:
    """Load and validate a spec file; `.diagnostics` holds every problem, sorted by place."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        loaded = Loaded(str(path))
        loaded.diagnostics.append(Diagnostic(Severity.ERROR, f"cannot read spec: {exc}"))
        return loaded
    loaded = validate_text(text, str(path), env)
    if isinstance(loaded.data, dict) and not has_errors(loaded.diagnostics):
        _check_firstboot(loaded, loaded.data, path.parent)
        _check_files(loaded, loaded.data)
        _resolve_work_dir(_dict(loaded.data.get("destination")), path.parent)
        _check_work_dir(loaded, _dict(loaded.data.get("destination")))
    return loaded


def validate_text(text: str, file: str, env: dict[str, str] | None = None) -> Loaded:
    loaded = load_text(text, file, env)
    if loaded.data is None and has_errors(loaded.diagnostics):
        return loaded
    if loaded.data is None:
        loaded.values[()] = Location(file, 1, 1)
        loaded.error(
            "the spec is empty: it needs version, source, destination, conversion_hosts and vms "
            "(see examples/specs/)",
            (),
        )
        return loaded
    for error in Draft202012Validator(schema()).iter_errors(loaded.data):
        _schema_error(loaded, error)
    if isinstance(loaded.data, dict):
        _semantic(loaded, loaded.data)
    unique = {(d.path, d.summary): d for d in loaded.diagnostics}
    loaded.diagnostics = sorted(_without_echoes(list(unique.values())), key=sort_key)
    return loaded


_SUGGESTED = re.compile(r"unknown key '.*' \(did you mean '(.*)'\?\)")
_NO_SELECTOR = "each VM entry needs exactly one of"


def _without_echoes(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """One mistake, one line: a misspelt key (`nmae:`, `vm:`) is reported as unknown with the
    key it should be; the missing key (or VM selector) it leaves is not reported again."""
    suggested: dict[Path, set[str]] = {}
    for d in diagnostics:
        match = _SUGGESTED.fullmatch(d.summary)
        if match and d.path:
            suggested.setdefault(d.path[:-1], set()).add(match.group(1))

    def echo(d: Diagnostic) -> bool:
        near = suggested.get(d.path, set())
        if d.summary.startswith(_NO_SELECTOR) and d.summary.endswith("(found none)"):
            return bool(near & set(SELECTORS))
        return any(d.summary == f"missing required key {key!r}" for key in near)

    return [d for d in diagnostics if not echo(d)]


# -- schema errors → diagnostics -------------------------------------------------------------


def _schema_error(loaded: Loaded, error: ValidationError) -> None:
    path: Path = tuple(error.absolute_path)
    if path in loaded.unresolved:
        return  # already reported: the environment variable it names is not set
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = list(_dict(error.schema).get("properties", {}))
        for key in error.instance:
            if key not in known:
                loaded.error(_unknown_key(key, known), (*path, key), key=True)
        return
    if kind in ("oneOf", "anyOf") and error.context:
        if path and path[-1] in _CHOICES:
            loaded.error(f"{path[-1]} must be {_CHOICES[path[-1]]}; got {error.instance!r}", path)
            return
        _schema_error(loaded, best_match(error.context))
        return
    loaded.error(_message(error), path)


_CHOICES = {  # keys that take one of several shapes, and what to say when none fits
    "flavor": "'auto', 'create' or {name: <flavor>}",
    "verify": "true, false or 'changed'",
}


def _unknown_key(key: str, known: list[str]) -> str:
    if key in ("password", "broker_password"):
        hint = " or ".join(k for k in known if k.endswith(("password_file", "password_env")))
        return f"passwords are never written in the spec: use {hint}"
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(known)})"
    return f"unknown key {key!r}{hint}"


def _json_type(value: Any) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _missing(value: Any, expected: Any) -> str:
    missing = [k for k in expected if k not in value]
    return f"missing required key {missing[0]!r}" if missing else "missing required key"


def _pattern(value: Any, expected: Any) -> str:
    name = _PATTERN_NAMES.get(expected, f"value (pattern {expected})")
    if isinstance(value, str) and "://" in value:  # a URL's password is never echoed
        value = re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:**@", value)
    return f"{value!r} is not a valid {name}"


_MESSAGES: dict[str, Callable[[Any, Any], str]] = {
    "required": _missing,
    "type": lambda v, e: (
        f"expected {e}, got "
        + ("nothing (null)" if v is None else f"{_json_type(v)} {json.dumps(v, default=str)[:40]}")
    ),
    "enum": lambda v, e: f"must be one of {', '.join(map(repr, e))}; got {v!r}",
    "const": lambda v, e: f"must be {e!r}; got {v!r}",
    "pattern": _pattern,
}


def _message(error: ValidationError) -> str:
    """A one-line message for a schema error, plainer than jsonschema's for the common kinds."""
    if error.validator == "minProperties" and error.validator_value == 1:
        return "must not be empty"
    render = _MESSAGES.get(str(error.validator))
    return render(error.instance, error.validator_value) if render else str(error.message)


# -- semantic checks ----------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    """`value` when it is a mapping, else {} (its type error is the schema's to report)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _semantic(loaded: Loaded, data: dict[str, Any]) -> None:
    vcenter = _dict(_dict(data.get("source")).get("vcenter"))
    if vcenter:
        _check_vcenter(loaded, vcenter)
    _check_unique_hosts(loaded, data.get("conversion_hosts"))
    _check_pins(loaded, data)
    _check_execution(loaded, _dict(data.get("execution")))
    _check_output(loaded, data)
    _check_reader(loaded, data)
    for path, settings in _settings_blocks(data):
        _check_settings(loaded, path, settings)
    if vcenter.get("datastore_path"):
        _check_cold_only(loaded, data)
    if vcenter.get("esxi"):
        for section in ("vms", "exclude"):
            for i, entry in enumerate(_list(data.get(section))):
                pattern = _dict(_dict(entry).get("pattern"))
                if "tag" in pattern:
                    loaded.error(
                        "an ESXi host has no tags (they live in vCenter): select by name or "
                        "folder with esxi: true",
                        (section, i, "pattern", "tag"),
                    )
    seen: dict[tuple[str, str], Path] = {}
    for section in ("vms", "exclude"):
        for i, entry in enumerate(_list(data.get(section))):
            if isinstance(entry, dict):
                _check_selector(loaded, (section, i), entry, seen if section == "vms" else {})


def _check_cold_only(loaded: Loaded, data: dict[str, Any]) -> None:
    """Disks read from a datastore mount are read once, with the source off: mode cold only."""
    default = _dict(data.get("defaults")).get("mode", "replicate")
    for path, settings in _settings_blocks(data):
        if path[0] != "vms":
            continue
        mode = settings.get("mode", default)
        if mode != "cold":
            loaded.error(
                f"mode {mode!r} with source.vcenter.datastore_path: disks read from a datastore "
                "mount are copied once, with the source off (mode: cold)",
                (*path, "mode") if "mode" in settings else path,
            )


def _check_vcenter(loaded: Loaded, vcenter: dict[str, Any]) -> None:
    path: Path = ("source", "vcenter")
    given = [k for k in ("password_file", "password_env") if k in vcenter]
    if len(given) != 1 and "password" not in vcenter:  # `password:` has its own line
        loaded.error(
            "give exactly one of password_file or password_env for the vCenter login", path
        )
    tls = vcenter.get("tls")
    if (
        isinstance(tls, dict)
        and tls.get("insecure") is True
        and ({"ca_file", "thumbprint"} & tls.keys())
    ):
        loaded.error(
            "insecure: true disables verification: drop ca_file/thumbprint or insecure",
            (*path, "tls", "insecure"),
        )


def reader_of(spec: Mapping[str, Any]) -> str:
    """How disks are read (`source.reader`): as the spec says; else `datastore_path` when the
    spec names a datastore mount or the lab's files (source.vcenter.datastore_path,
    source.lab_dir), `vddk` when it names VDDK (source.vcenter.vddk_libdir), else `https`."""
    source = spec.get("source") or {}
    vcenter = source.get("vcenter") or {}
    if source.get("reader"):
        return str(source["reader"])
    if source.get("lab_dir") or vcenter.get("datastore_path"):
        return "datastore_path"
    return "vddk" if vcenter.get("vddk_libdir") else "https"


def _check_reader(loaded: Loaded, data: dict[str, Any]) -> None:
    """The reader's settings, knowable from the spec (break-it 15: each passed validate and
    plan and failed only at apply, after a CI gate had approved the plan): vddk needs
    vddk_libdir, datastore_path a mount, https (the default without vddk_libdir) a CA, not a
    pinned thumbprint (curl has no option for one). The same lines as the apply's preflight."""
    source = _dict(data.get("source"))
    vcenter = _dict(source.get("vcenter"))
    tls, lab = _dict(vcenter.get("tls")), source.get("lab_dir")
    reader = reader_of({"source": {**source, "vcenter": vcenter}})  # malformed parts: none
    path: Path = ("source", "reader") if "reader" in source else ("source",)
    if reader == "vddk" and not vcenter.get("vddk_libdir"):
        loaded.error(
            "source.reader vddk needs source.vcenter.vddk_libdir (where VDDK is unpacked); or "
            "read disks with source.reader: https",
            path,
        )
    elif reader == "datastore_path" and not (vcenter.get("datastore_path") or lab):
        loaded.error(
            "source.reader datastore_path needs source.vcenter.datastore_path (where the "
            "datastores are mounted); or read disks with source.reader: https",
            path,
        )
    elif (
        reader == "https"
        and re.match(THUMBPRINT, str(tls.get("thumbprint") or ""))  # else its own error says
        and tls.get("insecure") is not True
    ):
        loaded.error(
            "source.reader https verifies vCenter's certificate against a CA, not a pinned "
            "thumbprint: set source.vcenter.tls.ca_file (the CA or self-signed certificate "
            "vCenter presents)",
            ("source", "vcenter", "tls", "thumbprint"),
        )


def _check_execution(loaded: Loaded, execution: dict[str, Any]) -> None:
    """The broker block: one password source at most, TLS settings only for amqps://."""
    path: Path = ("execution",)
    if {"broker_password_file", "broker_password_env"} <= execution.keys():
        loaded.error("give one of broker_password_file or broker_password_env, not both", path)
    broker = execution.get("broker")
    if "tls" in execution and isinstance(broker, str) and broker.startswith("amqp://"):
        loaded.error("tls is for an amqps:// broker: use amqps:// or drop tls", (*path, "tls"))


def _check_output(loaded: Loaded, data: dict[str, Any]) -> None:
    """output: image needs a work_dir and uses no conversion host; work_dir and image are for
    output: image only."""
    path: Path = ("destination",)
    destination = _dict(data.get("destination"))
    output = destination.get("output", "volume")
    if output == "image":
        if "work_dir" not in destination:
            loaded.error(
                "output: image needs work_dir: the local directory the disks are copied into "
                "and converted in",
                (*path, "output"),
            )
        if _list(data.get("conversion_hosts")):
            loaded.diagnostics.append(
                Diagnostic(
                    Severity.WARNING,
                    "conversion_hosts are not used with output: image (disks are copied and "
                    "converted on this machine, under work_dir)",
                    loaded.where(("conversion_hosts",)),
                    ("conversion_hosts",),
                )
            )
        return
    for key in ("work_dir", "image"):
        if key in destination and output == "volume":
            loaded.error(f"{key} is for output: image (this spec's output is volume)", (*path, key))


def _resolve_work_dir(destination: dict[str, Any], base: FsPath) -> None:
    """A relative work_dir is relative to the spec file's directory `base` (as first-boot
    scripts are) and made absolute, as the disk files are recorded: the same spec planned from
    another working directory (an AAP job, cron) names the same files (break-it 16b L5: it
    planned full copies into a second set). Symlinks are kept (os.path.abspath)."""
    work_dir = destination.get("work_dir")
    if isinstance(work_dir, str) and work_dir and not os.path.isabs(work_dir):
        destination["work_dir"] = os.path.abspath(base / work_dir)


def _check_work_dir(loaded: Loaded, destination: dict[str, Any]) -> None:
    """output: image's work_dir is an existing directory this process can write in."""
    work_dir = destination.get("work_dir")
    if destination.get("output") != "image" or not isinstance(work_dir, str):
        return
    where: Path = ("destination", "work_dir")
    if not FsPath(work_dir).is_dir():
        loaded.error(f"work_dir {work_dir!r} is not a directory: create it (mkdir -p)", where)
    elif not os.access(work_dir, os.W_OK | os.X_OK):
        loaded.error(f"work_dir {work_dir!r} is not writable by this user", where)
    loaded.diagnostics.sort(key=sort_key)


def _check_unique_hosts(loaded: Loaded, hosts: Any) -> None:
    if not isinstance(hosts, list):
        return
    seen: set[str] = set()
    for i, host in enumerate(hosts):
        create = host.get("create") if isinstance(host, dict) else None
        cidr = create.get("ssh_from") if isinstance(create, dict) else None
        if isinstance(cidr, str):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                loaded.error(
                    f"{cidr!r} is not a valid CIDR: {exc}",
                    ("conversion_hosts", i, "create", "ssh_from"),
                )
        name = host.get("name") if isinstance(host, dict) else None
        if isinstance(name, str):
            if name in seen:
                loaded.error(
                    f"conversion host {name!r} is listed twice", ("conversion_hosts", i, "name")
                )
            seen.add(name)


def _check_pins(loaded: Loaded, data: dict[str, Any]) -> None:
    """A VM's `conversion_host` names a host of `conversion_hosts` (with the nearest name)."""
    names = [_dict(h).get("name") for h in _list(data.get("conversion_hosts"))]
    hosts = [name for name in names if isinstance(name, str)]
    for i, vm in enumerate(_list(data.get("vms"))):
        pin = vm.get("conversion_host") if isinstance(vm, dict) else None
        if not isinstance(pin, str) or pin in hosts:
            continue
        close = difflib.get_close_matches(pin, hosts, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        else:
            hint = f" (it lists: {', '.join(hosts)})" if hosts else " (it lists none)"
        loaded.error(
            f"conversion host {pin!r} is not in conversion_hosts{hint}",
            ("vms", i, "conversion_host"),
        )


def _settings_blocks(data: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    if isinstance(data.get("defaults"), dict):
        yield ("defaults",), data["defaults"]
    for i, vm in enumerate(_list(data.get("vms"))):
        if isinstance(vm, dict):
            yield ("vms", i), vm


def _check_settings(loaded: Loaded, path: Path, settings: dict[str, Any]) -> None:
    network_map = settings.get("network_map")
    if isinstance(network_map, dict):
        for portgroup, target in network_map.items():
            create = target.get("create") if isinstance(target, dict) else None
            if isinstance(create, dict):
                _check_create(loaded, (*path, "network_map", portgroup, "create"), create)
    nics = settings.get("nics")
    if isinstance(nics, list):
        _check_nics(loaded, (*path, "nics"), nics)


def _check_firstboot(loaded: Loaded, data: dict[str, Any], base: FsPath) -> None:
    """First-boot scripts exist; relative paths become absolute (relative to the spec file)."""
    for path, settings in _settings_blocks(data):
        conversion = _dict(settings.get("conversion"))
        scripts = _list(conversion.get("firstboot"))
        for i, script in enumerate(scripts):
            resolved = (base / script).resolve()
            if not resolved.is_file():
                loaded.error(
                    f"first-boot script {script!r} is not a file ({resolved})",
                    (*path, "conversion", "firstboot", i),
                )
            else:
                scripts[i] = str(resolved)
    loaded.diagnostics.sort(key=sort_key)


def _check_files(loaded: Loaded, data: Any, path: Path = ()) -> None:
    """Files the spec names for secrets and trust exist and are what they should be: a password
    file is a readable file that only its owner can read (like ssh's keys), a CA file holds PEM
    certificates. Paths are read as the spec gives them (relative to the working directory)."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            _check_files(loaded, item, (*path, i))
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        where = (*path, key)
        if key in ("password_file", "broker_password_file") and isinstance(value, str):
            _check_password_file(loaded, FsPath(value), where)
        elif key == "ca_file" and isinstance(value, str):
            _check_ca_file(loaded, FsPath(value), where)
        else:
            _check_files(loaded, value, where)


def _check_password_file(loaded: Loaded, file: FsPath, where: Path) -> None:
    try:
        mode = file.stat().st_mode
        with file.open("rb"):
            pass
    except OSError as exc:
        loaded.error(f"password file {str(file)!r}: {exc.strerror}", where)
        return
    if not stat.S_ISREG(mode):
        loaded.error(f"password file {str(file)!r} is not a regular file", where)
    elif mode & 0o077:
        loaded.error(
            f"password file {str(file)!r} can be read by others (mode {stat.S_IMODE(mode):04o}): "
            f"chmod 600 {file}",
            where,
        )


def _check_ca_file(loaded: Loaded, file: FsPath, where: Path) -> None:
    try:
        text = file.read_text(errors="replace")
    except OSError as exc:
        loaded.error(f"CA file {str(file)!r}: {exc.strerror}", where)
        return
    if "-----BEGIN CERTIFICATE-----" not in text:
        loaded.error(
            f"CA file {str(file)!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", where
        )


def _check_create(loaded: Loaded, path: Path, create: dict[str, Any]) -> None:
    cidr = create.get("cidr")
    if not isinstance(cidr, str):
        return
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        loaded.error(f"{cidr!r} is not a valid CIDR: {exc}", (*path, "cidr"))
        return
    gateway = create.get("gateway")
    if isinstance(gateway, str):
        try:
            if ipaddress.ip_address(gateway) not in network:
                loaded.error(f"gateway {gateway} is outside {cidr}", (*path, "gateway"))
        except ValueError:
            loaded.error(f"{gateway!r} is not a valid IP address", (*path, "gateway"))


def _check_nics(loaded: Loaded, path: Path, nics: list[Any]) -> None:
    macs: set[str] = set()
    for i, nic in enumerate(nics):
        if not isinstance(nic, dict):
            continue
        mac = nic.get("mac")
        if isinstance(mac, str):
            if mac.lower() in macs:
                loaded.error(f"MAC {mac} appears twice", (*path, i, "mac"))
            macs.add(mac.lower())
        ip = nic.get("ip")
        if isinstance(ip, str):
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                loaded.error(f"{ip!r} is not a valid IP address", (*path, i, "ip"))


def _check_selector(
    loaded: Loaded, path: Path, entry: dict[str, Any], seen: dict[tuple[str, str], Path]
) -> None:
    chosen = [k for k in SELECTORS if k in entry]
    if len(chosen) != 1:
        found = f"found {', '.join(chosen)}" if chosen else "found none"
        loaded.error(f"each VM entry needs exactly one of {', '.join(SELECTORS)} ({found})", path)
        return
    kind = chosen[0]
    value = entry[kind]
    if kind == "pattern" or not isinstance(value, str):
        return
    ident = (kind, value.lower() if kind == "instance_uuid" else value)
    if ident in seen:
        first = loaded.where(seen[ident])
        line = f" (first at line {first.line})" if first else ""
        loaded.error(f"VM {kind} {value!r} is listed twice{line}", (*path, kind))
        return
    seen[ident] = (*path, kind)
