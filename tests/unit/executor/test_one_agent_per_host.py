"""A second `ferry agent` for a host whose agent already runs on this machine is refused in one
line before it consumes anything: Celery's worker would die on its control queue (RabbitMQ's
RESOURCE_LOCKED on the exclusive pidbox queue) with a traceback."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from engine.errors import AgentError
from engine.executor.agent import Agent, serve


class PingControl:
    """The broker's answer to a ping: the workers listed in `answering` reply."""

    def __init__(self, answering: list[str]) -> None:
        self.answering = answering
        self.pinged: list[list[str]] = []

    def ping(self, destination: list[str], timeout: float) -> list[dict[str, Any]]:
        self.pinged.append(destination)
        return [{n: {"ok": "pong"}} for n in destination if n in self.answering]


class PingApp:
    """An app whose worker is never built: serve must refuse before it."""

    def __init__(self, answering: list[str]) -> None:
        self.control = PingControl(answering)
        self.workers = 0

    def Worker(self, **options: Any) -> Any:  # noqa: N802 - Celery's name
        self.workers += 1
        raise RuntimeError("stop: the worker would start here")

    def task(self, **options: Any) -> Any:
        return lambda fun: fun


AGENT = Agent("conv-01", "server-1", "a" * 64, host=None)  # type: ignore[arg-type]
NODE = f"ferry-agent-conv-01@{socket.gethostname()}"


def test_a_second_agent_of_one_host_is_refused_naming_the_running_worker() -> None:
    app = PingApp([NODE])
    with pytest.raises(AgentError) as raised:
        serve(app, AGENT, concurrency=1)  # type: ignore[arg-type]
    assert str(raised.value) == (
        f"an agent for conversion host conv-01 already runs on this machine (worker {NODE} "
        "answered on the broker): one agent per host; stop it first"
    )
    assert app.control.pinged == [[NODE]] and app.workers == 0


def test_the_first_agent_of_a_host_starts_its_worker() -> None:
    app = PingApp(["ferry-agent-conv-02@" + socket.gethostname()])  # another host's agent
    with pytest.raises(RuntimeError, match="the worker would start here"):
        serve(app, AGENT, concurrency=1)  # type: ignore[arg-type]
    assert app.workers == 1
