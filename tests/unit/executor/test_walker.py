"""The walker: order, bounded parallelism (global and per pool), failures skip only what is
downstream, and stop() starts nothing new."""

from __future__ import annotations

import threading
import time
from typing import Any

import networkx as nx
import pytest

from engine.executor.walker import Outcome, Walker


def graph(*edges: tuple[str, str], nodes: tuple[str, ...] = ()) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return g


class Recorder:
    def __init__(self, fail: set[str] | None = None, delay: float = 0.02) -> None:
        self.fail = fail or set()
        self.delay = delay
        self.order: list[str] = []
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, node: str) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
            self.order.append(node)
        if node in self.fail:
            raise RuntimeError(f"{node} broke")


def test_dependencies_run_first() -> None:
    g = graph(("snap", "d1"), ("snap", "d2"), ("d1", "server"), ("d2", "server"))
    rec = Recorder()
    result = Walker(g, rec, parallelism=4).walk()
    assert result.ok
    assert rec.order[0] == "snap" and rec.order[-1] == "server"


def test_global_parallelism_bound() -> None:
    g = graph(nodes=tuple(f"n{i}" for i in range(12)))
    rec = Recorder()
    Walker(g, rec, parallelism=3).walk()
    assert rec.peak == 3


def test_pool_limit_bounds_nodes_of_that_pool() -> None:
    g = graph(nodes=tuple(f"esx1-{i}" for i in range(6)) + tuple(f"esx2-{i}" for i in range(6)))
    rec = Recorder()
    result = Walker(
        g, rec, parallelism=8, pools={"esx1": 2, "esx2": 2}, pools_of=lambda n: [n.split("-")[0]]
    ).walk()
    assert result.ok and rec.peak <= 4


def test_failure_skips_only_downstream() -> None:
    g = graph(("a", "b"), ("b", "c"), ("x", "y"), ("a", "z"), ("x", "z"))
    result = Walker(g, Recorder(fail={"a"}), parallelism=2).walk()
    assert result.outcomes["a"] is Outcome.FAILED
    assert {n: result.outcomes[n] for n in "bcz"} == {n: Outcome.SKIPPED for n in "bcz"}
    assert result.outcomes["x"] is Outcome.DONE and result.outcomes["y"] is Outcome.DONE
    assert result.skipped_because["c"] == "a"
    assert str(result.errors["a"]) == "a broke"
    assert not result.ok


def test_stop_starts_nothing_new() -> None:
    g = graph(*[(f"n{i}", f"n{i + 1}") for i in range(5)])
    walker: Walker

    def run(node: str) -> None:
        if node == "n1":
            walker.stop()

    walker = Walker(g, run, parallelism=1)
    result = walker.walk()
    assert result.outcomes["n1"] is Outcome.DONE
    assert result.outcomes["n2"] is Outcome.NOT_STARTED


@pytest.mark.parametrize("limit", [0])
def test_a_pool_that_cannot_fit_leaves_nodes_not_started(limit: int) -> None:
    g = graph(nodes=("a",))
    result = Walker(g, Recorder(), pools={"p": limit}, pools_of=lambda n: ["p"]).walk()
    assert result.outcomes["a"] is Outcome.NOT_STARTED


def test_a_slow_preparation_does_not_hold_up_other_ready_nodes() -> None:
    """web's preparation (a re-placement asking the agents: seconds) runs off the scheduling
    thread: db starts and ends while it is in flight; web's pools are asked only after it, and
    web runs then. Each node's preparation is asked for once."""
    g = graph(nodes=("web", "db"))
    db_ran, released, asked, order = threading.Event(), [], [], []

    def prepare(node: str) -> Any:
        asked.append(node)
        if node != "web":
            return None
        return lambda: released.append(db_ran.wait(5))  # the old walk: nothing until it ends

    def pools_of(node: str) -> list[str]:
        assert node != "web" or released, "web's pools asked before its preparation ended"
        return [f"pool-{node}"]

    def run(node: str) -> None:
        order.append(node)
        if node == "db":
            db_ran.set()

    result = Walker(g, run, pools_of=pools_of, prepare=prepare).walk()
    assert result.ok and released == [True] and order == ["db", "web"]
    assert sorted(asked) == ["db", "web"]


def test_a_failed_preparation_fails_its_node_unrun_and_skips_what_follows() -> None:
    g = graph(("a", "b"), nodes=("c",))
    rec = Recorder()

    def prepare(node: str) -> Any:
        if node != "a":
            return None

        def broken() -> None:
            raise RuntimeError("no host for a")

        return broken

    result = Walker(g, rec, prepare=prepare).walk()
    assert result.outcomes == {"a": Outcome.FAILED, "b": Outcome.SKIPPED, "c": Outcome.DONE}
    assert str(result.errors["a"]) == "no host for a" and rec.order == ["c"]


def test_a_stop_during_a_preparation_leaves_its_node_not_started() -> None:
    g = graph(nodes=("a",))
    walker: Walker
    rec = Recorder()
    walker = Walker(g, rec, prepare=lambda _n: walker.stop)
    assert walker.walk().outcomes["a"] is Outcome.NOT_STARTED and rec.order == []


def test_a_node_that_gives_its_slot_back_lets_the_next_start_before_it_ends() -> None:
    """Issue 14: a copy's slot is released when its bytes are written. Pool of 1: `a` releases
    it mid-run and waits until `b` (same pool) has started; `c` waits for `b`'s slot (b never
    releases), and a second release by `a` (or its end) frees nothing more."""
    g = graph(nodes=("a", "b", "c"))
    b_started, order, peak_in_bytes = threading.Event(), [], []
    walker: Walker
    in_bytes = [0]
    lock = threading.Lock()

    def run(node: str) -> None:
        with lock:
            order.append(f"{node}+")
            in_bytes[0] += 1
            peak_in_bytes.append(in_bytes[0])
        if node == "b":
            b_started.set()
        time.sleep(0.05)
        with lock:
            in_bytes[0] -= 1
        walker.release(node)
        walker.release(node)  # once per node
        if node == "a":
            assert b_started.wait(5), "b did not start once a gave its slot back"
        with lock:
            order.append(f"{node}-")

    walker = Walker(g, run, parallelism=3, pools={"p": 1}, pools_of=lambda n: ["p"])
    result = walker.walk()
    assert result.ok, result.errors
    assert order.index("b+") < order.index("a-")  # b ran beside a's tail
    assert max(peak_in_bytes) == 1  # never two in their slot at once
    assert walker._in_use == {"p": 0}


def test_without_a_release_the_slot_is_held_to_the_end() -> None:
    g = graph(nodes=("a", "b"))
    order: list[str] = []
    result = Walker(
        g,
        lambda n: order.extend([f"{n}+", f"{n}-"]),
        parallelism=2,
        pools={"p": 1},
        pools_of=lambda n: ["p"],
    ).walk()
    assert result.ok and order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])


def test_an_urgent_node_starts_beside_full_pools_and_parallelism() -> None:
    """Break-it 12o H1: db01's source was powered off while the host's two slots copied other
    VMs' replicas; its final syncs (0 B) waited 101 s for them. Urgent nodes (a cutover's steps
    with the source off) start at once, outside the pools and `parallelism`."""
    release = threading.Event()
    started: list[str] = []

    def run(node: str) -> None:
        started.append(node)
        if node.startswith("replica"):
            assert release.wait(10), "the urgent node never ran beside the replicas"
        if node == "db01-disk":
            release.set()  # ran while both replicas still held the host's slots

    g = graph(("db01-off", "db01-disk"), nodes=("replica-1", "replica-2"))
    walker = Walker(
        g,
        run,
        parallelism=3,  # the power-off takes a thread, no slot; the replicas both slots
        pools={"host": 2},
        pools_of=lambda n: [] if n == "db01-off" else ["host"],
        urgent=lambda n: n == "db01-disk",
    )
    result = walker.walk()
    assert result.ok, result.errors
    assert started.index("db01-disk") < 4 and release.is_set()


def test_urgent_nodes_are_bounded_by_their_share_of_the_pool() -> None:
    """A wave of cutovers: the urgent steps of one host run at most its pool's size at once,
    beside (not instead of) what the pool runs."""
    rec = Recorder(delay=0.05)
    g = graph(nodes=tuple(f"u{i}" for i in range(6)))
    result = Walker(
        g,
        rec,
        parallelism=1,
        pools={"host": 2},
        pools_of=lambda n: ["host"],
        urgent=lambda n: True,
    ).walk()
    assert result.ok and rec.peak == 2
