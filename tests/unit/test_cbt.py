from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from engine.dataplane.cbt import merge_extents, total_bytes

extents = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 500)), max_size=60)


def covered(exts: list[tuple[int, int]]) -> set[int]:
    return {b for start, length in exts for b in range(start, start + length)}


@given(extents)
def test_merge_covers_exactly_the_same_bytes(exts: list[tuple[int, int]]) -> None:
    merged = merge_extents(exts)
    assert covered(merged) == covered(exts)
    assert total_bytes(merged) == len(covered(exts))


@given(extents)
def test_merged_extents_are_sorted_disjoint_and_not_touching(exts: list[tuple[int, int]]) -> None:
    merged = merge_extents(exts)
    assert all(length > 0 for _, length in merged)
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(merged))


def test_window_split_areas_join() -> None:
    assert merge_extents([(268435455, 1), (268435456, 1)]) == [(268435455, 2)]
