"""The scheduler is a pure policy: tested with a fake clock and no llama.cpp (convention 7)."""

from __future__ import annotations

from qwenhost.engine.llamacpp.scheduler import Scheduler
from qwenhost.engine.llamacpp.sequence import SeqState
from tests.engine.fakes import Clock, config, request, run_prompt


def test_waiting_requests_are_admitted_as_slots_free() -> None:
    s = Scheduler(config(max_waiting=2), Clock())
    for i in range(2):
        s.submit(request(f"r{i}", [1, 2, 3]))
    plan = s.schedule()
    assert [g.request_id for g in plan.admitted] == ["r0", "r1"]
    for i in range(2, 6):  # the scheduler never refuses: engine/admission.py bounds what reaches it
        s.submit(request(f"r{i}", [4, 5]))
    assert not s.schedule().admitted  # both slots busy
    s.finish(s.groups["r0"].seqs[0])
    assert [g.request_id for g in s.schedule().admitted] == ["r2"]


def test_prefill_is_chunked_by_the_token_budget() -> None:
    s = Scheduler(config(batch_tokens=8), Clock())
    s.submit(request("r", list(range(1, 21))))
    sizes = []
    for _ in range(3):
        plan = s.schedule()
        sizes.append(len(plan.tokens))
        s.on_decoded(plan)
    assert sizes == [8, 8, 4]
    assert plan.tokens[-1].wants_logits and not any(t.wants_logits for t in plan.tokens[:-1])


def test_a_jump_forward_run_is_decoded_in_one_batch_with_logits_on_its_last_token() -> None:
    s = Scheduler(config(batch_tokens=4), Clock())
    s.submit(request("r", [1, 2]))
    run_prompt(s)
    seq = s.groups["r"].seqs[0]
    s.on_decoded(s.schedule())  # the first sampled token goes in
    s.on_sampled(seq, [7, 8, 9, 10, 11])  # a sampled token and the four the grammar forced after it
    plan = s.schedule()
    assert [t.token for t in plan.tokens] == [7, 8, 9, 10]  # the budget's worth
    assert not any(t.wants_logits for t in plan.tokens)  # the run is not over: nothing to sample yet
    s.on_decoded(plan)
    plan = s.schedule()
    assert [t.token for t in plan.tokens] == [11] and plan.tokens[0].wants_logits and plan.tokens[0].owner is seq
    assert [t.pos for t in plan.tokens] == [len(seq.tokens) - 1]


def test_n_choices_share_one_prefill() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3], n=2))
    plan = s.schedule()
    slots = {seq.slot for seq in plan.admitted[0].seqs}
    assert len(slots) == 2
    assert all(set(t.seq_ids) == slots for t in plan.tokens)
    assert len(plan.tokens) == 3  # prompt computed once for both choices


def test_queue_timeout_expires_waiting_requests() -> None:
    clock = Clock()
    s = Scheduler(config(num_slots=1), clock)
    s.submit(request("a", [1]))
    s.schedule()
    s.submit(request("b", [2]))
    clock.now += 31
    plan = s.schedule()
    assert [g.request_id for g in plan.expired] == ["b"]
    assert "b" not in s.groups


def test_abort_frees_the_slot_and_keeps_its_cache() -> None:
    s = Scheduler(config(num_slots=1), Clock())
    s.submit(request("a", [1, 2, 3, 4]))
    run_prompt(s)
    s.abort("a")
    assert s.num_running == 0 and s.slots[0].owner is None and s.slots[0].tokens == [1, 2, 3, 4]


def test_preemption_requeues_the_newest_and_recomputes() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    s.submit(request("old", [1, 2]))
    clock.now += 1
    s.submit(request("new", [3, 4]))
    run_prompt(s)
    victim = s.preempt_one()
    assert victim is not None and victim.group.request_id == "new"
    assert victim.state is SeqState.WAITING and victim.num_computed == 0
    clock.now += 3600
    plan = s.schedule()
    assert not plan.admitted and not plan.expired  # full cache: wait for "old"; a preempted request never expires
    s.finish(s.groups["old"].seqs[0])
    plan = s.schedule()
    assert plan.admitted[0] is victim.group
    assert [t.token for t in plan.tokens] == [3, 4, 500]  # prompt and the sampled token are recomputed


def test_abort_while_queued_leaves_the_queue_and_never_runs() -> None:
    s = Scheduler(config(num_slots=1), Clock())
    s.submit(request("a", [1, 2, 3]))
    s.schedule()
    s.submit(request("b", [4, 5, 6]))
    assert s.num_waiting == 1
    group = s.abort("b")
    assert group is not None and all(seq.state is SeqState.FINISHED for seq in group.seqs)
    assert s.num_waiting == 0 and "b" not in s.groups
    s.finish(s.groups["a"].seqs[0])
    plan = s.schedule()
    assert not plan.admitted and not plan.tokens and not s.has_work()
    assert s.abort("b") is None  # a second abort (the client's, after the engine's) is harmless


def test_abort_while_prefilling_frees_every_slot_at_once() -> None:
    s = Scheduler(config(num_slots=2, batch_tokens=4), Clock())
    s.submit(request("a", list(range(1, 21)), n=2))  # 20 tokens: five 4-token chunks
    plan = s.schedule()
    s.on_decoded(plan)
    group = s.groups["a"]
    assert all(seq.state is SeqState.PREFILL and seq.num_computed == 4 for seq in group.seqs)
    s.abort("a")
    assert s.num_running == 0 and all(slot.owner is None for slot in s.slots)
    assert [slot.tokens for slot in s.slots] == [[1, 2, 3, 4], [1, 2, 3, 4]]  # computed cells stay cached
    s.submit(request("b", [7, 8], n=2))  # both slots are free for the next request in the same step
    plan = s.schedule()
    assert [g.request_id for g in plan.admitted] == ["b"]
    assert all(bt.owner is None or bt.owner.group.request_id == "b" for bt in plan.tokens)


def test_abort_while_decoding_frees_the_slot() -> None:
    s = Scheduler(config(num_slots=1), Clock())
    s.submit(request("a", [1, 2]))
    run_prompt(s)
    assert s.groups["a"].seqs[0].state is SeqState.DECODE
    s.abort("a")
    s.submit(request("b", [3]))
    assert [g.request_id for g in s.schedule().admitted] == ["b"]


def test_abort_of_a_preempted_request_removes_it_from_the_queue() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    s.submit(request("old", [1, 2]))
    clock.now += 1
    s.submit(request("new", [3, 4]))
    run_prompt(s)
    assert s.preempt_one() is not None and s.num_waiting == 1
    s.abort("new")
    assert s.num_waiting == 0 and s.num_running == 1


def test_a_burst_beyond_the_slots_is_queued_never_refused() -> None:
    """What admission accepted, the scheduler holds: 10 requests of n = 4 on 4 slots all run in turn."""
    s = Scheduler(config(num_slots=4, max_waiting=4), Clock())
    for i in range(10):
        s.submit(request(f"r{i}", [i + 1, 2], n=4, max_new=1))
    finished = []
    for _ in range(100):
        plan = s.schedule()
        s.on_decoded(plan)
        for seq in list(s.running):
            if seq.is_prompt_computed:
                s.on_sampled(seq, [9])
                s.finish(seq)
                if seq.group.is_done:
                    finished.append(seq.group.request_id)
        if not s.has_work():
            break
    assert finished == [f"r{i}" for i in range(10)]
