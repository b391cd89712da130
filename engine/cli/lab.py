"""`ferry lab ...`: the embedded lab (vCenter with CBT, real disk bytes)."""

from __future__ import annotations

import json
import os
import resource
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from engine.cli.plan import load_spec
from engine.errors import UserError
from engine.lab import agents as lab_agents
from engine.lab.guest import tiny_debian
from engine.lab.lab import Lab, default_dir, status_json
from engine.units import MiB, human, parse_size, rate

app = typer.Typer(
    help="The embedded lab: start, stop, inspect it, and write to its disks.", no_args_is_help=True
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Lab directory (default: $FERRY_LAB_DIR, ./state/lab, or the checkout's "
        "state/lab when that holds the lab).",
    ),
]


def _lab(directory: Path | None) -> Lab:
    return Lab((directory or default_dir()).resolve())


MAX_HOSTS = 8  # conversion-host servers `lab up --hosts` boots at most


@app.command()
def up(
    directory: DirOption = None,
    hosts: Annotated[
        int,
        typer.Option(
            "--hosts",
            help=f"Conversion-host servers to boot: ferry-conversion-01..NN (1 to {MAX_HOSTS}).",
        ),
    ] = 1,
) -> None:
    """Start the lab and create its VMs (refuses when it is already up)."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise UserError(f"--hosts {hosts}: the lab boots 1 to {MAX_HOSTS} conversion hosts")
    lab = _lab(directory)
    typer.echo(f"starting the lab in {lab.root} (about a minute; a few on a busy machine)")
    seconds = lab.up(progress=lambda line: typer.echo(f"  {line}"), hosts=hosts)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    typer.echo(f"lab up in {seconds:.1f} s (ferry peak RSS {peak:.0f} MiB): {lab.root}")


@app.command()
def down(
    directory: DirOption = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also remove the lab directory (disks, volumes, logs).")
    ] = False,
) -> None:
    """Stop every process the lab started, by PID; --purge also removes its data."""
    lab = _lab(directory)
    if not (purge and not lab.processes()):
        stopped = lab.down()
        typer.echo("stopped " + ", ".join(f"{p.name} (pid {p.pid})" for p in stopped))
    if purge:
        lab.purge()
        typer.echo(f"removed {lab.root}")
        return
    left = lab.disk_usage()
    typer.echo(f"{human(left)} of lab data left in {lab.root}: `ferry lab down --purge` removes it")


DEMO_3_HOSTS = lab_agents.CHECKOUT / "plans" / "demo-3-hosts.yaml"


@app.command()
def agents(
    spec_argument: Annotated[
        Path | None,
        typer.Argument(
            metavar="SPEC",
            help="The spec, as `plan` and `apply` take it (the same as --spec).",
            show_default=False,
        ),
    ] = None,
    directory: DirOption = None,
    spec: Annotated[
        Path,
        typer.Option("--spec", help="The spec the coordinator applies (its conversion_hosts)."),
    ] = DEMO_3_HOSTS,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the agents this lab started, by PID.")
    ] = False,
) -> None:
    """Start one `ferry agent --host NAME` process per conversion host of the spec.

    Those running already for the spec are kept: after one was killed, this starts it alone.
    Each on the lab's broker (its password in a 0600 file, never on argv), its PID in the lab
    directory (agents.json) so `lab agents --stop` and `lab down` stop exactly these."""
    if spec_argument is not None:
        if spec not in (DEMO_3_HOSTS, spec_argument):
            raise UserError(f"two specs given ({spec_argument} and --spec {spec}): give one")
        spec = spec_argument
    lab = _lab(directory)
    if stop:
        stopped = lab_agents.stop(lab.root)
        typer.echo(
            "stopped " + ", ".join(f"{p.name} (pid {p.pid})" for p in stopped)
            if stopped
            else f"no agent of the lab in {lab.root} runs"
        )
        return
    if not lab.running():
        raise UserError(not_up(lab))
    env = lab.env()
    for name, value in env.items():  # the spec reads the lab's variables (`ferry lab env`)
        os.environ.setdefault(name, value)
    hosts = lab_agents.spec_hosts(dict(load_spec(spec).data))
    started = lab_agents.start(
        lab.root,
        spec.resolve(),
        hosts,
        env,
        say=lambda line: typer.echo(f"  {line}"),
        warn=lambda line: typer.echo(f"warning: {line}", err=True),
    )
    serving = len({a.name for a in started} & {lab_agents.agent_name(h) for h in hosts})
    count = f"{serving} agents" if serving == len(hosts) else f"{serving} of {len(hosts)} agents"
    typer.echo(
        f"{count} run for {spec} (logs in {lab.root / 'logs'}); "
        "`ferry lab agents --stop` stops them"
    )
    if serving < len(hosts):
        raise typer.Exit(1)


@app.command()
def status(
    directory: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Check every lab service through its API; exit 1 unless all are up."""
    lab = _lab(directory)
    statuses = lab.status()
    report = status_json(statuses, lab.memory())
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for s in statuses:
            typer.echo(f"{'up  ' if s.up else 'DOWN'}  {s.name:<10} {s.detail}")
        typer.echo(
            f"memory: {human(report['resident_bytes'])} resident in {report['processes']} processes"
        )
    if not report["up"]:
        if not lab.running():  # say where it looked: a lab started elsewhere is not "down"
            typer.echo(not_up(lab), err=True)
        raise typer.Exit(1)


def not_up(lab: Lab) -> str:
    """One line for a lab directory with no lab running: where ferry looked and how to point it
    at a lab started elsewhere (or start one here)."""
    return (
        f"no lab is running in {lab.root.resolve()}: if one runs elsewhere, set FERRY_LAB_DIR "
        "or pass --dir; else `ferry lab up` starts one there"
    )


@app.command()
def env(
    directory: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Print shell exports pointing at the lab (no secrets: the password stays in its file)."""
    lab = _lab(directory)
    if not lab.running():
        raise UserError(not_up(lab))
    values = lab.env()
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    for key, value in values.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@app.command()
def write(
    vm: Annotated[str, typer.Argument(help="Lab VM name.")],
    disk: Annotated[int, typer.Option("--disk", help="Disk device key, e.g. 2000.")],
    offset: Annotated[str, typer.Option("--offset", help="Byte offset (K/M/G suffixes).")],
    length: Annotated[str, typer.Option("--length", help="Byte count (K/M/G suffixes).")],
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the written bytes.")] = None,
    directory: DirOption = None,
) -> None:
    """A guest write: change a lab VM's live disk and record it in the change journal."""
    result = _lab(directory).write(vm, disk, parse_size(offset), parse_size(length), seed=seed)
    typer.echo(
        f"wrote {human(result.length)} at offset {result.offset} of {result.vm!r} "
        f"disk {result.disk} (journal entry {result.sequence})"
    )


@app.command()
def guest(
    vm: Annotated[str, typer.Argument(help="Lab VM name (build-old is the Debian one).")],
    disk: Annotated[int, typer.Option("--disk", help="Disk device key.")] = 2000,
    directory: DirOption = None,
) -> None:
    """Put a tiny real Debian guest on a lab VM's disk, for a real virt-v2v conversion.

    Built once (~2-3 min), then cached; a cutover of that VM then converts a real guest."""
    lab = _lab(directory)
    if not lab.running():
        raise UserError(f"the lab in {lab.root} is not up: run `ferry lab up`")
    image = tiny_debian()
    data = lab.install_guest(vm, disk, image)
    typer.echo(f"installed {image.name} ({human(data)} of data) on {vm!r} disk {disk}")


@app.command()
def fault(
    vm: Annotated[str, typer.Argument(help="Lab VM name.")],
    disk: Annotated[int, typer.Option("--disk", help="Disk device key.")] = 2000,
    read_error_rate: Annotated[
        str | None, typer.Option("--read-error-rate", help="Share of reads that fail, e.g. 1%.")
    ] = None,
    read_delay_ms: Annotated[
        int | None,
        typer.Option("--read-delay-ms", help="Every read waits this long (a slow source host)."),
    ] = None,
    read_rate_mib: Annotated[
        float | None,
        typer.Option(
            "--read-rate-mib",
            help="Reads go at most this many MiB/s (an NFC stream: ~150, its 160 MB/s).",
        ),
    ] = None,
    device_full: Annotated[
        bool, typer.Option("--device-full", help="Writes to its volume fail with ENOSPC.")
    ] = False,
    device_lossy: Annotated[
        bool,
        typer.Option("--device-lossy", help="Writes to its volume are acknowledged and lost."),
    ] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Heal the disk.")] = False,
    directory: DirOption = None,
) -> None:
    """A fault drill: a lab disk's reads fail or are slow, or its volume's device is full or lossy.

    A share of its reads fail with EIO (nbdkit's error filter), every read is slow (nbdkit's
    delay filter), its reads are capped at a rate (nbdkit's rate filter), or the conversion
    host's device for its volume is full (ENOSPC) or loses its writes."""
    given = [clear, read_error_rate is not None, read_delay_ms is not None, device_full]
    if [*given, read_rate_mib is not None, device_lossy].count(True) != 1:
        raise UserError(
            "give one of --read-error-rate RATE, --read-delay-ms MS, --read-rate-mib MIBS, "
            "--device-full, --device-lossy or --clear"
        )
    lab = _lab(directory)
    if read_rate_mib is not None:
        lab.read_rate(vm, disk, read_rate_mib)
        typer.echo(f"{vm!r} disk {disk}: reads go at most {rate(read_rate_mib * MiB)}")
    elif device_lossy:
        lab.device_lossy(vm, disk)
        typer.echo(f"{vm!r} disk {disk}: writes to its volume are acknowledged and lost")
    elif device_full:
        lab.device_full(vm, disk)
        typer.echo(f"{vm!r} disk {disk}: writes to its volume fail with ENOSPC")
    elif read_delay_ms is not None:
        lab.read_delay(vm, disk, read_delay_ms)
        typer.echo(f"{vm!r} disk {disk}: every read waits {read_delay_ms} ms")
    else:
        lab.read_errors(vm, disk, None if clear else read_error_rate)
        typer.echo(
            f"{vm!r} disk {disk}: "
            + ("healed" if clear else f"{read_error_rate} of reads fail with EIO")
        )


@app.command("expire-sessions")
def expire_sessions(directory: DirOption = None) -> None:
    """A fault drill: the lab vCenter ends every session (clients must log in again).

    As vCenter does when sessions time out or an administrator terminates them."""
    ended = _lab(directory).expire_sessions()
    typer.echo(f"the lab vCenter ended {ended} session(s)")


@app.command()
def outage(
    service: Annotated[str, typer.Argument(help="e.g. cinder-api, neutron-api, rabbitmq.")],
    seconds: Annotated[
        float, typer.Option("--seconds", min=0, help="How long it stays down.")
    ] = 20.0,
    directory: DirOption = None,
) -> None:
    """A fault drill: stop one lab service, wait, start it again on the same ports."""
    lab = _lab(directory)
    stopped = lab.outage(service)
    typer.echo(f"{service} (pid {stopped.pid}) stopped; back in {seconds:.0f} s")
    time.sleep(seconds)
    began = time.monotonic()
    started = lab.recover(service)
    typer.echo(f"{service} up again (pid {started.pid}) in {time.monotonic() - began:.1f} s")
