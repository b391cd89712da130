"""A bounded-parallel walk of a DAG: a node starts when all its predecessors succeeded; a node
downstream of a failure is skipped (never started) and reported; everything else goes on.

Parallelism is bounded globally (`parallelism`) and per pool: each node may name pools (a
conversion host, an ESXi host) whose limits it must fit in. `stop()` (e.g. on SIGINT) starts
no new node and lets the running ones end (a copy ends early, at a checkpoint: its own stop
event is set alongside).

A node may give its pools back before it ends (`release(node)`, from its own thread): a disk
copy's slot is released when its bytes are written, so the next copy starts while this one
detaches and records (Forklift's scheduler counts a disk transfer, not its bookkeeping).

A node may need something done before its pools are known (`prepare`: choosing the conversion
host of a VM whose host is gone asks the agents, seconds). That runs on the walker's own
preparing thread, one at a time, while the walk goes on: other ready nodes keep starting, and
the node is considered once it is done (a preparation that raises fails the node, as its run
would).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Node = Hashable


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # a predecessor failed or was skipped
    NOT_STARTED = "not-started"  # the walk was stopped first


@dataclass
class WalkResult:
    outcomes: dict[Node, Outcome] = field(default_factory=dict)
    errors: dict[Node, BaseException] = field(default_factory=dict)
    skipped_because: dict[Node, Node] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o is Outcome.DONE for o in self.outcomes.values())


# threads for urgent nodes (a cutover's disks and conversions with the source off) beyond
# `parallelism`: more wait for one of these, never for the other VMs' copies
URGENT_THREADS = 16
URGENT = "!urgent"  # a pool's urgent share: the pool's name and this


class Walker:
    def __init__(
        self,
        graph: Any,
        run: Callable[[Node], None],
        *,
        parallelism: int = 4,
        pools: Mapping[str, int] | None = None,
        pools_of: Callable[[Node], Iterable[str]] = lambda _: (),
        prepare: Callable[[Node], Callable[[], object] | None] = lambda _: None,
        urgent: Callable[[Node], bool] = lambda _: False,
    ) -> None:
        """`prepare(node)`, called once when the node is ready: None, or what must run (off the
        scheduling thread) before `pools_of(node)` is asked; `pools_of` must then be quick.
        `urgent(node)`, asked when a ready node could start: such a node runs on threads of its
        own, outside `parallelism`, and takes the urgent share of its pools (each as large as
        the pool, used by urgent nodes only): a cutover's steps with the source off never wait
        for other VMs' copies (break-it 12o H1), and the urgent ones are still bounded."""
        self.graph = graph
        self.run = run
        self.parallelism = max(1, parallelism)
        self.limits = dict(pools or {})
        self.pools_of = pools_of
        self.prepare = prepare
        self.urgent = urgent
        self._hurried: set[Node] = set()  # urgent nodes running: not counted in parallelism
        self._stop = threading.Event()
        self._lock = threading.Lock()  # in_use and the early releases, asked from any thread
        self._in_use: dict[str, int] = {}
        self._holding: dict[Node, list[str]] = {}  # started nodes: the pools they hold
        self._wake: Future[None] = Future()

    def stop(self) -> None:
        self._stop.set()

    def release(self, node: Node) -> None:
        """`node`, running, gives its pools back now (a copy whose bytes are written); the walk
        may start what waited for them. Once per node: later calls, and its end, release
        nothing more."""
        with self._lock:
            for name in self._holding.pop(node, ()):
                self._in_use[name] -= 1
            wake = self._wake
        if not wake.done():
            with contextlib.suppress(InvalidStateError):  # two releases at once: one wakes
                wake.set_result(None)

    def walk(self) -> WalkResult:
        result = WalkResult()
        waiting = {n: set(self.graph.predecessors(n)) for n in self.graph.nodes}
        fresh = [n for n, deps in waiting.items() if not deps]  # ready, not prepared yet
        ready: list[Node] = []
        running: dict[Future[Any], Node] = {}
        preparing: dict[Future[Any], Node] = {}
        with (
            ThreadPoolExecutor(max_workers=self.parallelism) as pool,
            ThreadPoolExecutor(max_workers=URGENT_THREADS) as hurry,
            ThreadPoolExecutor(max_workers=1) as preparer,  # its thread starts with a first job
        ):
            while fresh or ready or running or preparing:
                self._prepare(preparer, fresh, ready, preparing)
                with self._lock:
                    if self._wake.done():
                        self._wake = Future()
                    wake = self._wake
                started = self._start_ready((pool, hurry), ready, running)
                if not running and not preparing:
                    if not started:  # nothing can start: pools too small or stopped
                        break
                    continue
                done, _ = wait([*running, *preparing, wake], return_when=FIRST_COMPLETED)
                for future in done:
                    if future is wake:
                        continue
                    if future in preparing:
                        self._prepared(preparing.pop(future), future, result, waiting, ready)
                        continue
                    node = running.pop(future)
                    self._hurried.discard(node)
                    self.release(node)
                    self._finish(node, future, result, waiting, fresh)
        for node in self.graph.nodes:
            result.outcomes.setdefault(node, Outcome.NOT_STARTED)
        return result

    def _prepare(
        self,
        preparer: ThreadPoolExecutor,
        fresh: list[Node],
        ready: list[Node],
        preparing: dict[Future[Any], Node],
    ) -> None:
        """Each node just made ready goes to `ready`, or first to `preparing` when it needs a
        preparation (none is started after a stop)."""
        for node in fresh:
            job = None if self._stop.is_set() else self.prepare(node)
            if job is None:
                ready.append(node)
            else:
                preparing[preparer.submit(job)] = node
        fresh.clear()

    def _prepared(
        self,
        node: Node,
        future: Future[Any],
        result: WalkResult,
        waiting: dict[Node, set[Node]],
        ready: list[Node],
    ) -> None:
        """A node's preparation ended: the node is ready, or failed (what follows it skipped)."""
        if future.exception() is None:
            ready.append(node)
        else:
            self._finish(node, future, result, waiting, ready)

    def _held(self, node: Node, hurry: bool) -> list[str]:
        """The pools `node` takes: its own, or their urgent shares (URGENT after the name)."""
        return [f"{p}{URGENT}" if hurry else p for p in self.pools_of(node)]

    def _fits(self, held: list[str]) -> bool:
        used = self._in_use
        return all(used.get(p, 0) < self.limits.get(p.removesuffix(URGENT), 1 << 30) for p in held)

    def _start_ready(
        self,
        pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
        ready: list[Node],
        running: dict[Future[Any], Node],
    ) -> bool:
        """Start what can start: urgent nodes at once on their own threads (`pools`[1]), the
        others within `parallelism` and their pools (`pools`[0])."""
        started = False
        for node in sorted(ready, key=lambda n: not self.urgent(n)):  # urgent ones first
            if self._stop.is_set():
                break
            hurry = self.urgent(node)
            if not hurry and len(running) - len(self._hurried) >= self.parallelism:
                continue
            with self._lock:
                held = self._held(node, hurry)
                if not self._fits(held):
                    continue
                self._holding[node] = held
                for name in held:
                    self._in_use[name] = self._in_use.get(name, 0) + 1
            ready.remove(node)
            if hurry:
                self._hurried.add(node)
            running[pools[1 if hurry else 0].submit(self.run, node)] = node
            started = True
        return started

    def _finish(
        self,
        node: Node,
        future: Future[Any],
        result: WalkResult,
        waiting: dict[Node, set[Node]],
        ready: list[Node],
    ) -> None:
        error = future.exception()
        if error is None:
            result.outcomes[node] = Outcome.DONE
            for successor in self.graph.successors(node):
                waiting[successor].discard(node)
                if not waiting[successor] and successor not in result.outcomes:
                    ready.append(successor)
            return
        result.outcomes[node] = Outcome.FAILED
        result.errors[node] = error
        for descendant in _descendants(self.graph, node):
            if descendant not in result.outcomes:
                result.outcomes[descendant] = Outcome.SKIPPED
                result.skipped_because[descendant] = node
                if descendant in ready:
                    ready.remove(descendant)


def _descendants(graph: Any, node: Node) -> list[Node]:
    seen: list[Node] = []
    stack = list(graph.successors(node))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.append(current)
            stack.extend(graph.successors(current))
    return seen
