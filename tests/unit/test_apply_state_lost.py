"""An apply whose state is lost for good (break-it 12c item 6) starts no new step: each would
fail on its first record, some after acting (a power-off, a volume). The real walker and
`_observed`; an applier whose first step fails on an unreachable state. Then the apply's last
line: the state, the cause and the records it lacks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import networkx as nx

from engine.cli.apply import _observed, state_lost_line
from engine.errors import StateError, StateUnreachableError
from engine.executor.events import Events
from engine.executor.walker import Outcome, Walker

GONE = StateUnreachableError("state pg (schema ferry) unreachable: the connection was lost")


def walk(outage: StateError | None) -> dict[Any, Outcome]:
    store = SimpleNamespace(outage=None)
    ran: list[str] = []

    def run(node: str) -> None:
        ran.append(node)
        if node == "vm.a.snapshot":
            store.outage = outage
            raise outage or StateError("cannot write state pg: a constraint")

    changes = {n: SimpleNamespace(address=n, kind="k", action=SimpleNamespace(value="create"))
               for n in ("vm.a.snapshot", "vm.b.snapshot", "vm.c.snapshot")}  # fmt: skip
    steps = SimpleNamespace(step_began=lambda _a: None, step_ended=lambda _a, _e: None)
    applier: Any = SimpleNamespace(
        changes=changes,
        host_of=lambda _c: "",
        run=run,
        ctx=SimpleNamespace(store=store),
        cutover=steps,
    )
    graph = nx.DiGraph()
    graph.add_nodes_from(changes)  # independent steps, one at a time: a's first
    walker = Walker(graph, lambda _: None, parallelism=1)
    walker.run = _observed(applier, Events(None), walker.stop)
    return walker.walk().outcomes


def test_a_state_lost_for_good_starts_no_new_step() -> None:
    outcomes = walk(GONE)
    assert outcomes["vm.a.snapshot"] is Outcome.FAILED
    assert outcomes["vm.b.snapshot"] is outcomes["vm.c.snapshot"] is Outcome.NOT_STARTED


def test_another_state_error_stops_only_its_step() -> None:
    outcomes = walk(None)
    assert outcomes["vm.b.snapshot"] is outcomes["vm.c.snapshot"] is Outcome.DONE


def test_the_last_line_names_the_state_the_cause_and_what_is_not_written() -> None:
    store: Any = SimpleNamespace(outage=GONE, display="pg (schema ferry)")
    line = state_lost_line(store, ["vm.a.snapshot", "vm.a.conversion"])
    assert line.startswith(
        "state pg (schema ferry) unreachable: the connection was lost; not written: "
        "vm.a.snapshot, vm.a.conversion (the next plan"
    )
    assert state_lost_line(SimpleNamespace(outage=None, display="x"), []) == ""
