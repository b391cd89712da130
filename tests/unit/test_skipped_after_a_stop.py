"""What did not run, as `ferry apply` lists it at its end: a step that Ctrl-C/SIGTERM stopped
is "stopped", and the steps skipped after it say "after X stopped", not "failed" (break-it 16b
L3: "skipped: vm.web01.server (after vm.web01.image[2000] failed)" after a stop during the
upload). A real walk of a real graph; the steps are fakes."""

from __future__ import annotations

import networkx as nx
from rich.console import Console

from engine.cli import apply as cli
from engine.errors import OpenStackError, StoppedError
from engine.executor.events import Events
from engine.executor.walker import Walker


def _walk_and_say(error: Exception) -> list[str]:
    image, volume, server = "vm.web01.image[2000]", "vm.web01.volume[2000]", "vm.web01.server"
    graph = nx.DiGraph([(image, volume), (volume, server)])

    def run(node: object) -> None:
        if node == image:
            raise error

    result = Walker(graph, run).walk()
    console = Console(record=True, width=300)
    cli._say_what_did_not_run(result, Events(None, ()), console)
    return console.export_text().splitlines()


def test_steps_skipped_after_a_stopped_step_say_it_stopped() -> None:
    said = _walk_and_say(StoppedError("upload of disk 2000 stopped after 56.0 MiB"))
    assert said == [
        "stopped: vm.web01.image[2000]: upload of disk 2000 stopped after 56.0 MiB",
        "skipped: vm.web01.volume[2000] (after vm.web01.image[2000] stopped)",
        "skipped: vm.web01.server (after vm.web01.image[2000] stopped)",
    ]


def test_steps_skipped_after_a_failed_step_say_it_failed() -> None:
    said = _walk_and_say(OpenStackError("Glance refused the upload"))
    assert said[1:] == [
        "skipped: vm.web01.volume[2000] (after vm.web01.image[2000] failed)",
        "skipped: vm.web01.server (after vm.web01.image[2000] failed)",
    ]
    assert said[0].startswith("failed: vm.web01.image[2000]: ")
