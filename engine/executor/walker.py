"""A bounded-parallel walk of a DAG: a node starts when all its predecessors succeeded; a node
downstream of a failure is skipped (never started) and reported; everything else goes on.

Parallelism is bounded globally (`parallelism`) and per pool: each node may name pools (a
conversion host, an ESXi host) whose limits it must fit in. `stop()` (e.g. on SIGINT) starts
no new node and lets the running ones end (a copy ends early, at a checkpoint: its own stop
event is set alongside).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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


class Walker:
    def __init__(
        self,
        graph: Any,
        run: Callable[[Node], None],
        *,
        parallelism: int = 4,
        pools: Mapping[str, int] | None = None,
        pools_of: Callable[[Node], Iterable[str]] = lambda _: (),
    ) -> None:
        self.graph = graph
        self.run = run
        self.parallelism = max(1, parallelism)
        self.limits = dict(pools or {})
        self.pools_of = pools_of
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def walk(self) -> WalkResult:
        result = WalkResult()
        waiting = {n: set(self.graph.predecessors(n)) for n in self.graph.nodes}
        ready = [n for n, deps in waiting.items() if not deps]
        running: dict[Future[None], Node] = {}
        in_use: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            while ready or running:
                started = self._start_ready(pool, ready, running, in_use)
                if not running:
                    if not started:  # nothing can start: pools too small or stopped
                        break
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    node = running.pop(future)
                    for name in self.pools_of(node):
                        in_use[name] -= 1
                    self._finish(node, future, result, waiting, ready)
        for node in self.graph.nodes:
            result.outcomes.setdefault(node, Outcome.NOT_STARTED)
        return result

    def _fits(self, node: Node, in_use: dict[str, int]) -> bool:
        return all(in_use.get(p, 0) < self.limits.get(p, 1 << 30) for p in self.pools_of(node))

    def _start_ready(
        self,
        pool: ThreadPoolExecutor,
        ready: list[Node],
        running: dict[Future[None], Node],
        in_use: dict[str, int],
    ) -> bool:
        started = False
        for node in list(ready):
            if self._stop.is_set() or len(running) >= self.parallelism:
                break
            if not self._fits(node, in_use):
                continue
            ready.remove(node)
            for name in self.pools_of(node):
                in_use[name] = in_use.get(name, 0) + 1
            running[pool.submit(self.run, node)] = node
            started = True
        return started

    def _finish(
        self,
        node: Node,
        future: Future[None],
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
