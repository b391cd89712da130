"""A sync's result as an agent sends it (JSON): the seconds it waited for one of its host's
slots travel beside the copy's own seconds (the scale-out benchmark tells dispatch from slot
wait by them), and a field this ferry does not know (a newer agent's) does not fail the step."""

from __future__ import annotations

import json

from engine.executor.host import SyncResult


def test_the_slot_wait_travels_and_unknown_fields_are_left_out() -> None:
    result = SyncResult(10, 10, 0, 0, 0, 1.5, waited=2.25)
    sent = json.loads(json.dumps(result.to_json()))
    assert SyncResult.from_json(sent) == result
    assert SyncResult.from_json({**sent, "from_a_newer_agent": 1}) == result
    del sent["waited"]  # an older agent's
    assert SyncResult.from_json(sent).waited == 0.0
