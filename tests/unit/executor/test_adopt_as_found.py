"""Break-it 16d F1: a saved `--adopt-lineage unlabeled` plan (made while an older ferry's objects
beside a running server carried no lineage) was applied after the real state had labelled them
with its own: the apply adopted them anyway, restamped them, and its --destroy deleted the
production server. An adoption now checks, right before it stamps, that the object is still
managed as the plan found it (or by this state: an adoption interrupted after its stamp)."""

from __future__ import annotations

import pytest

from engine.errors import OpenStackError
from engine.executor.volume_ownership import check_found_lineage

MINE = "mine-lineage"


@pytest.mark.parametrize(
    ("found", "now"),
    [
        ("", ""),  # unlabelled then and now (an older ferry's, os-migrate's)
        ("lost", "lost"),  # --adopt-lineage lost: as planned
        ("", MINE),  # this state's stamp landed, then the apply stopped: the re-run goes on
    ],
)
def test_an_object_as_the_plan_found_it_is_adopted(found: str, now: str) -> None:
    check_found_lineage("img-1", found, now, MINE)


@pytest.mark.parametrize(
    ("found", "now", "said"),
    [
        (
            "",
            "real",
            r"img-1 is managed by ferry state real since this plan was made \(found unlabelled\)",
        ),
        (
            "lost",
            "real",
            r"img-1 is managed by ferry state real since .*\(found of ferry state lost\)",
        ),
        ("", None, r"img-1 is gone since the plan"),
    ],
    ids=["labelled-since", "taken-since", "gone"],
)
def test_an_object_labelled_or_taken_since_the_plan_is_not_adopted(
    found: str, now: str | None, said: str
) -> None:
    with pytest.raises(OpenStackError, match=r"^" + said):  # the failed step names the address
        check_found_lineage("img-1", found, now, MINE)
