"""The chaos run's step generator (tests/integration/chaos.py) without the lab: a seed gives the
same steps every time, only enabled operations are drawn, writes stay inside their disks, the
run ends with a complete apply, and without stop_full no stop can land in a full copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.lab.estate import find_vm
from tests.integration.chaos import (
    ALL_OPS,
    DEFAULT_OPS,
    _matches,
    content_digest,
    enabled_ops,
    generate,
)

SEEDS = range(40)


def test_a_seed_gives_the_same_steps() -> None:
    assert generate(7, 15) == generate(7, 15)
    assert generate(7, 15) != generate(8, 15)


@pytest.mark.parametrize("seed", SEEDS)
def test_only_enabled_operations_and_a_final_apply(seed: int) -> None:
    steps = generate(seed, 20, DEFAULT_OPS)
    assert steps[-1] == {"op": "apply", "plan": True}
    assert {s["op"] for s in steps} <= set(DEFAULT_OPS)
    assert all(not s.get("full") for s in steps if s["op"] == "stop")


@pytest.mark.parametrize("seed", SEEDS)
def test_writes_stay_inside_their_disk(seed: int) -> None:
    steps = generate(seed, 30, ALL_OPS)
    writes = [s for s in steps if s["op"] == "write"]
    writes += [s["fill"] for s in steps if s["op"] == "stop" and s.get("fill")]
    for w in writes:
        vm = find_vm(w["vm"])
        disk = vm.disk(w["disk"]) if vm else None
        assert disk is not None and w["offset"] >= 0 and w["offset"] + w["length"] <= disk.capacity


@pytest.mark.parametrize("seed", SEEDS)
def test_without_stop_full_no_stop_precedes_the_first_apply_or_follows_a_reset(seed: int) -> None:
    ops = tuple(o for o in ALL_OPS if o != "stop_full")
    synced: set[str] = set()
    for step in generate(seed, 30, ops):
        if step["op"] == "apply":
            synced = {"web01", "build-old"}
        elif step["op"] in ("cbt_reset", "grow"):
            synced.discard(step["vm"])
        elif step["op"] == "stop":
            assert synced == {"web01", "build-old"}, step


def test_enabled_ops_reads_names_and_refuses_unknown_ones() -> None:
    assert enabled_ops("default") == DEFAULT_OPS
    assert enabled_ops("default,rename") == (*DEFAULT_OPS, "rename")
    assert enabled_ops("all") == ALL_OPS
    with pytest.raises(ValueError, match="unknown chaos operation 'teleport'"):
        enabled_ops("write,teleport")


def test_stop_points_match_their_events() -> None:
    copy = {"event": "copy", "address": "vm.web01.disk[2000]", "done": 6, "total": 10}
    assert _matches(copy, "copy") and _matches(copy, "copy_mid")
    assert not _matches(copy, "verify")
    assert not _matches(copy, "copy", on="vm.web01.disk[2001]")
    taken = {"event": "step", "vm": "web01", "message": "vm.web01: snapshot snapshot-9 taken"}
    assert _matches(taken, "snapshot") and not _matches(taken, "protect")
    assert _matches({"event": "node_start", "kind": "server"}, "boot")


def test_content_digest_is_of_content_not_layout(tmp_path: Path) -> None:
    sparse, dense = tmp_path / "a", tmp_path / "b"
    with sparse.open("wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(b"x" * 5000)
    with dense.open("wb") as f:
        f.write(bytes(8 << 20))
        f.seek(3 << 20)
        f.write(b"x" * 5000)
    assert content_digest(sparse, 8 << 20) == content_digest(dense, 8 << 20)
    with dense.open("r+b") as f:
        f.seek((8 << 20) - 1)
        f.write(b"y")
    assert content_digest(sparse, 8 << 20) != content_digest(dense, 8 << 20)
