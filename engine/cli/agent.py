"""`ferry agent --host NAME --spec SPEC`: a conversion host's agent, a Celery worker that takes
the host-bound steps (syncs: attach, find the device, copy, verify, detach; `--verify`
compares; conversions) from the host's own queue (ferry.host.<NAME>) on the spec's broker
(execution.broker) and runs them here."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.cli.apply import host_seams
from engine.cli.plan import load_spec
from engine.errors import UserError
from engine.executor import host
from engine.executor.agent import Agent, Served, default_checkpoints, serve
from engine.executor.remote import (
    agent_digest,
    agent_threads,
    broker_from_spec,
    check_broker,
    make_app,
)
from engine.providers.openstack import compute
from engine.providers.openstack.read import connect_destination
from engine.providers.vsphere.session import session, target_from_spec


def agent(
    host_name: Annotated[
        str, typer.Option("--host", help="This conversion host: its name in the spec.")
    ],
    spec_path: Annotated[
        Path,
        typer.Option(
            "--spec",
            help="The spec the coordinator applies (the same in what an agent uses of it).",
        ),
    ],
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="Directory of the running copies' checkpoints (a copy redelivered after this "
            "agent died resumes there) [default: $XDG_STATE_HOME/ferry/agent/NAME].",
        ),
    ] = None,
    forget_lineage: Annotated[
        bool,
        typer.Option(
            "--forget-lineage",
            help="Forget the state lineage this agent serves (recorded in its checkpoint "
            "directory at its first task; a task of another state is refused) and exit: the "
            "next task's state is served. Once the other state's applies are over.",
        ),
    ] = False,
) -> None:
    """Run this conversion host's agent: copies sent to its queue run here, until stopped.

    SIGTERM/Ctrl-C: running copies finish first; twice: at once, and they are redelivered."""
    if forget_lineage:
        _forget(host_name, checkpoints or default_checkpoints(host_name))
        return
    spec = dict(load_spec(spec_path).data)
    broker = broker_from_spec(spec, os.environ)
    if broker is None:
        raise UserError(f"{spec_path} sets no execution.broker: an agent takes its work from one")
    entry = _conversion_host(spec, host_name)
    with session(target_from_spec(spec["source"]["vcenter"], dict(os.environ))) as si:
        _serve(spec, broker, entry, host_name, si, checkpoints or default_checkpoints(host_name))


def _forget(host_name: str, checkpoints: Path) -> None:
    """`--forget-lineage`: one line saying what was forgotten. Raises UserError when the
    record cannot be removed."""
    try:
        served = Served.forget(checkpoints)
    except OSError as exc:
        raise UserError(f"cannot forget the state lineage in {checkpoints}: {exc}") from exc
    if served:
        typer.echo(
            f"agent {host_name}: forgot state lineage {served} ({checkpoints}); its next "
            "task's state is the one it serves"
        )
    else:
        typer.echo(f"agent {host_name}: serves no state lineage yet ({checkpoints})")


def _serve(
    spec: dict[str, Any],
    broker: Any,
    entry: dict[str, Any],
    host_name: str,
    si: Any,
    checkpoints: Path,
) -> None:
    """The agent's worker, reading disks with its own vCenter session `si` (the https reader
    authenticates with its cookie), until stopped."""
    sources, devices = host_seams(spec, entry, si)
    found = sources.check()
    if found:
        typer.echo(found)
    conn = connect_destination(spec["destination"])
    server = compute.conversion_server(conn, host_name)
    if server is None:
        raise UserError(f"conversion host {host_name!r} is not a server in the cloud")
    app = make_app(broker)
    check_broker(app)
    log_with_time()
    slots = threading.BoundedSemaphore(int(entry.get("max_parallel", 2)))
    urgent = threading.BoundedSemaphore(int(entry.get("max_parallel", 2)))
    seams = host.Host(conn, sources, devices, slots, urgent)
    found = Agent(host_name, str(server.id), agent_digest(spec, host_name), seams, checkpoints)
    raise typer.Exit(serve(app, found, concurrency=agent_threads(entry)))


AGENT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_with_time() -> None:
    """An agent is a long-running service: its lines (INFO and up, on stderr) carry a timestamp,
    the level and the logger. `ferry`'s own setup (`warning: <message>`, WARNING and up, for a
    command's one-line output) is replaced, not kept beside it (basicConfig alone would keep it)."""
    logging.basicConfig(level=logging.INFO, format=AGENT_LOG_FORMAT, force=True)


def _conversion_host(spec: dict[str, Any], name: str) -> dict[str, Any]:
    hosts = [h for h in spec.get("conversion_hosts") or [] if isinstance(h, dict)]
    for entry in hosts:
        if entry.get("name") == name:
            return entry
    listed = ", ".join(repr(h.get("name")) for h in hosts) or "none"
    raise UserError(f"--host {name!r} is not one of the spec's conversion_hosts ({listed})")
