"""The step plan: which requests a step, and its batch, concern (a failure there fails exactly those)."""

from __future__ import annotations

from qwenhost.engine.llamacpp.scheduler import Scheduler
from tests.engine.fakes import Clock, config, request, run_prompt


def test_batch_groups_are_the_requests_with_text_in_the_batch() -> None:
    s = Scheduler(config(num_slots=3, batch_tokens=64), Clock())
    s.submit(request("decoding", [1, 2]))
    run_prompt(s)
    s.submit(request("prefilling", [3, 4, 5], n=2))
    plan = s.schedule()
    assert sorted(g.request_id for g in plan.batch_groups()) == ["decoding", "prefilling"]
    assert sorted(g.request_id for g in plan.groups()) == ["decoding", "prefilling"]
    assert [g.request_id for g in plan.admitted] == ["prefilling"]


def test_a_request_waiting_outside_the_batch_is_not_concerned() -> None:
    s = Scheduler(config(num_slots=1), Clock())
    s.submit(request("running", [1, 2]))
    s.submit(request("queued", [3]))
    plan = s.schedule()
    assert [g.request_id for g in plan.groups()] == ["running"]
