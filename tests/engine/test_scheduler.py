"""The scheduler is a pure policy: tested with a fake clock and no llama.cpp (convention 7)."""

from __future__ import annotations

from qwenhost.core.types import SamplingParams
from qwenhost.engine.llamacpp.scheduler import (
    MemOp,
    Scheduler,
    SchedulerConfig,
    SeqState,
    common_prefix_len,
)
from qwenhost.engine.protocol import GenerationRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(**overrides: object) -> SchedulerConfig:
    values: dict[str, object] = dict(
        num_slots=2,
        num_pin_slots=2,
        batch_tokens=64,
        max_waiting=4,
        queue_timeout_s=30.0,
        min_pin_tokens=4,
        pin_ttl_s=300.0,
        max_pinned_tokens=100,
    )
    values.update(overrides)
    return SchedulerConfig(**values)  # type: ignore[arg-type]


def request(rid: str, prompt: list[int], n: int = 1, max_new: int = 5, pins: tuple[int, ...] = ()) -> GenerationRequest:
    return GenerationRequest(rid, tuple(prompt), tuple(SamplingParams() for _ in range(n)), max_new, cache_pins=pins)


def run_prompt(s: Scheduler) -> None:
    """Plan steps until every admitted sequence has its prompt computed, then 'sample' one token each."""
    for _ in range(20):
        plan = s.schedule()
        if not plan.tokens:
            return
        s.on_decoded(plan)
        for bt in plan.tokens:
            if bt.owner is not None and s.prompt_done(bt.owner):
                for seq in bt.owner.group.seqs:
                    if seq.state is SeqState.PREFILL and s.prompt_done(seq):
                        s.on_sampled(seq, 500)
        if all(q.state is not SeqState.PREFILL for q in s.running):
            return


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len(list(range(5000)), [*range(4321), 0]) == 4321


def test_waiting_requests_are_admitted_as_slots_free() -> None:
    s = Scheduler(config(max_waiting=2), Clock())
    for i in range(2):
        s.submit(request(f"r{i}", [1, 2, 3]))
    plan = s.schedule()
    assert [g.request_id for g in plan.admitted] == ["r0", "r1"]
    for i in range(2, 6):  # the scheduler never refuses: engine/admission.py bounds what reaches it
        s.submit(request(f"r{i}", [4, 5]))
    assert not s.schedule().admitted  # both slots busy
    s.finish(s.groups["r0"].seqs[0], "stop")
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


def test_finished_slot_is_reused_for_a_shared_prefix() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    s.submit(request("a", [1, 2, 3, 4, 5, 6]))
    run_prompt(s)
    seq = s.groups["a"].seqs[0]
    s.finish(seq, "stop")
    assert s.slots[seq.slot].tokens == [1, 2, 3, 4, 5, 6]  # the sampled token was never decoded
    s.submit(request("b", [1, 2, 3, 4, 9]))
    plan = s.schedule()
    group = plan.admitted[0]
    other = group.seqs[0].slot
    # The prefix is copied into a free slot: "a"'s longer history stays cached for a follow-up turn.
    assert group.cached_tokens == 4 and other != seq.slot
    assert MemOp("cp", other, src=seq.slot, p0=0, p1=4) in plan.mem_ops
    assert s.slots[seq.slot].tokens == [1, 2, 3, 4, 5, 6]
    assert [t.token for t in plan.tokens] == [9]


def test_a_follow_up_turn_takes_over_its_own_slot() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3]))
    run_prompt(s)
    seq = s.groups["a"].seqs[0]
    s.finish(seq, "stop")
    s.submit(request("b", [1, 2, 3, 500, 7, 8]))  # the conversation goes on: everything cached is kept
    plan = s.schedule()
    # the sampled 500 was never decoded, so the slot holds [1, 2, 3]
    assert plan.admitted[0].seqs[0].slot == seq.slot and plan.admitted[0].cached_tokens == 3
    assert MemOp("rm", seq.slot, p0=3) in plan.mem_ops


def test_identical_prompt_recomputes_its_last_token() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3]))
    run_prompt(s)
    s.finish(s.groups["a"].seqs[0], "stop")
    s.submit(request("b", [1, 2, 3]))
    plan = s.schedule()
    assert plan.admitted[0].cached_tokens == 2 and [t.token for t in plan.tokens] == [3]


def test_prefix_of_a_running_sequence_is_copied() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [7, 7, 7, 7, 1]))
    run_prompt(s)
    s.submit(request("b", [7, 7, 7, 7, 2]))
    plan = s.schedule()
    a_slot = s.groups["a"].seqs[0].slot
    b_slot = s.groups["b"].seqs[0].slot
    assert b_slot != a_slot
    assert MemOp("cp", b_slot, src=a_slot, p0=0, p1=4) in plan.mem_ops
    assert plan.admitted[0].cached_tokens == 4


def test_cache_salt_isolates_keys() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3, 4]), salt="alice")
    run_prompt(s)
    s.finish(s.groups["a"].seqs[0], "stop")
    s.submit(request("b", [1, 2, 3, 5]), salt="bob")
    assert s.schedule().admitted[0].cached_tokens == 0


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
    s.finish(s.groups["old"].seqs[0], "stop")
    plan = s.schedule()
    assert plan.admitted[0] is victim.group
    assert [t.token for t in plan.tokens] == [3, 4, 500]  # prompt and the sampled token are recomputed


def test_explicit_cache_pins_and_hits() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    prompt = [5, 6, 7, 8, 9, 10, 11]
    s.submit(request("a", prompt, pins=(6,)))
    run_prompt(s)
    group = s.groups["a"]
    assert s.pin_prefixes(group) == 6
    ops = s.take_pending_ops()
    pin_id = s.pins[0].seq_id
    assert MemOp("cp", pin_id, src=group.seqs[0].slot, p0=0, p1=6) in ops
    s.finish(group.seqs[0], "stop")
    s.slots[group.seqs[0].slot].tokens = []  # even if the slot's own cache is gone, the pin serves
    s.submit(request("b", [*prompt[:6], 99], pins=(6,)))
    plan = s.schedule()
    assert plan.admitted[0].cached_tokens == 6
    assert MemOp("cp", plan.admitted[0].seqs[0].slot, src=pin_id, p0=0, p1=6) in plan.mem_ops
    clock.now += 301
    s.schedule()
    assert not s.pins  # expired after 5 minutes without a hit


def test_short_prefixes_are_not_pinned() -> None:
    s = Scheduler(config(min_pin_tokens=10), Clock())
    s.submit(request("a", [1, 2, 3, 4, 5], pins=(4,)))
    run_prompt(s)
    assert s.pin_prefixes(s.groups["a"]) == 0 and not s.pins


def test_evict_idle_drops_least_recently_used() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    for i, rid in enumerate(("a", "b")):
        clock.now += 1
        s.submit(request(rid, [i + 1, 9]))
        run_prompt(s)
        s.finish(s.groups[rid].seqs[0], "stop")
    assert s.evict_idle()
    assert [slot.tokens for slot in s.slots].count([]) == 1
    assert any(op.kind == "rm" for op in s.take_pending_ops())


def test_identical_prompt_with_kept_logits_is_reused_whole() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3], n=2))
    run_prompt(s)
    lead = s.groups["a"].seqs[0]
    s.note_prompt_logits(lead)
    for seq in s.groups["a"].seqs:
        s.finish(seq, "stop")
    s.submit(request("b", [1, 2, 3], n=2))
    plan = s.schedule()
    group = plan.admitted[0]
    assert plan.replay == [group] and group.cached_tokens == 3
    assert group.seqs[0].slot == lead.slot and not plan.tokens  # nothing to compute before sampling
    assert MemOp("cp", group.seqs[1].slot, src=lead.slot, p0=0, p1=3) in plan.mem_ops
    s.submit(request("c", [1, 2, 4]))
    assert not s.schedule().replay  # a different prompt recomputes as usual


def test_kept_logits_are_forgotten_when_the_cells_change() -> None:
    s = Scheduler(config(num_slots=1), Clock())
    s.submit(request("a", [1, 2, 3]))
    run_prompt(s)
    s.note_prompt_logits(s.groups["a"].seqs[0])
    s.finish(s.groups["a"].seqs[0], "stop")
    s.submit(request("b", [1, 2, 9]))  # reuses [1, 2] only: position 2 is rewritten
    run_prompt(s)
    s.finish(s.groups["b"].seqs[0], "stop")
    s.submit(request("c", [1, 2, 3]))
    plan = s.schedule()
    assert not plan.replay and plan.admitted[0].cached_tokens == 2


def test_short_prefixes_are_not_copied_when_copies_are_costly() -> None:
    """Split KV streams copy whole: a prefix shorter than min_copy_tokens is recomputed instead,
    a longer one is copied, and taking over the holder's own slot needs no copy at all."""
    s = Scheduler(config(min_copy_tokens=4), Clock())
    s.submit(request("a", [7, 7, 7, 1, 1, 1]))
    run_prompt(s)
    s.submit(request("b", [7, 7, 7, 2]))  # shares 3 tokens with running "a": a copy would be needed
    plan = s.schedule()
    assert not [op for op in plan.mem_ops if op.kind == "cp"]
    assert plan.admitted[0].cached_tokens == 0
    s2 = Scheduler(config(min_copy_tokens=4), Clock())
    s2.submit(request("a", [7, 7, 7, 7, 1]))
    run_prompt(s2)
    s2.submit(request("b", [7, 7, 7, 7, 2]))
    plan = s2.schedule()
    assert [op.kind for op in plan.mem_ops].count("cp") == 1
    assert plan.admitted[0].cached_tokens == 4
    # "a" again, finished: "d" shares 3 tokens and "a" holds only 1 more, so "a"'s slot is taken over
    s.finish(s.groups["a"].seqs[0], "stop")
    s.finish(s.groups["b"].seqs[0], "stop")
    s.submit(request("d", [7, 7, 7, 9]))
    plan = s.schedule()
    assert not [op for op in plan.mem_ops if op.kind == "cp"]
    assert plan.admitted[0].cached_tokens == 3
    s3 = Scheduler(config(min_copy_tokens=4), Clock())
    s3.submit(request("a", [7, 7, 1]))
    run_prompt(s3)
    s3.finish(s3.groups["a"].seqs[0], "stop")
    s3.submit(request("c", [7, 7, 1, 5, 6]))  # a follow-up turn: its own slot, no copy, reuse kept
    plan = s3.schedule()
    assert not [op for op in plan.mem_ops if op.kind == "cp"]
    assert plan.admitted[0].cached_tokens == 3
