"""The KV/slot cache: placement with prefix reuse, kept logits, pins and eviction, driven through the
scheduler's admission as the engine drives it (pure: no llama.cpp)."""

from __future__ import annotations

from qwenhost.engine.llamacpp.kvcache import common_prefix_len
from qwenhost.engine.llamacpp.plan import MemOp
from qwenhost.engine.llamacpp.scheduler import Scheduler
from tests.engine.fakes import Clock, config, request, run_prompt


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len(list(range(5000)), [*range(4321), 0]) == 4321


def test_finished_slot_is_reused_for_a_shared_prefix() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    s.submit(request("a", [1, 2, 3, 4, 5, 6]))
    run_prompt(s)
    seq = s.groups["a"].seqs[0]
    s.finish(seq)
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
    s.finish(seq)
    s.submit(request("b", [1, 2, 3, 500, 7, 8]))  # the conversation goes on: everything cached is kept
    plan = s.schedule()
    # the sampled 500 was never decoded, so the slot holds [1, 2, 3]
    assert plan.admitted[0].seqs[0].slot == seq.slot and plan.admitted[0].cached_tokens == 3
    assert MemOp("rm", seq.slot, p0=3) in plan.mem_ops


def test_identical_prompt_recomputes_its_last_token() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3]))
    run_prompt(s)
    s.finish(s.groups["a"].seqs[0])
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
    s.submit(request("a", [1, 2, 3, 4], salt="alice"))
    run_prompt(s)
    s.finish(s.groups["a"].seqs[0])
    s.submit(request("b", [1, 2, 3, 5], salt="bob"))
    assert s.schedule().admitted[0].cached_tokens == 0


def test_explicit_cache_pins_and_hits() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    prompt = [5, 6, 7, 8, 9, 10, 11]
    s.submit(request("a", prompt, pins=(6,)))
    run_prompt(s)
    group = s.groups["a"]
    assert s.cache.pin_prefixes(group) == 6
    ops = s.cache.take_pending_ops()
    pin_id = s.pins[0].seq_id
    assert pin_id >= len(s.slots)  # a snapshot key, never a llama.cpp sequence id
    assert ops == [MemOp("cp", pin_id, src=group.seqs[0].slot)]  # the prompt's cells, copied out of the KV cache
    s.finish(group.seqs[0])
    s.slots[group.seqs[0].slot].tokens = []  # even if the slot's own cache is gone, the pin serves
    s.submit(request("b", [*prompt[:6], 99], pins=(6,)))
    plan = s.schedule()
    assert plan.admitted[0].cached_tokens == 6
    assert MemOp("cp", plan.admitted[0].seqs[0].slot, src=pin_id, p0=0, p1=6) in plan.mem_ops
    clock.now += 301
    s.schedule()
    assert not s.pins  # expired after 5 minutes without a hit


def test_one_prompts_entries_share_one_snapshot_until_the_last_is_dropped() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)  # 2 entries at most, 100 cells
    prompt = list(range(5, 15))
    s.submit(request("a", prompt, pins=(5, 8)))
    run_prompt(s)
    assert s.cache.pin_prefixes(s.groups["a"]) == 8
    assert [MemOp("cp", s.pins[0].seq_id, src=0)] == s.cache.take_pending_ops()  # one copy for both
    assert {p.seq_id for p in s.pins} == {s.pins[0].seq_id} and [len(p.tokens) for p in s.pins] == [5, 8]
    first = s.pins[0].seq_id
    clock.now += 1
    s.submit(request("b", list(range(50, 60)), pins=(6,)))
    run_prompt(s)
    assert s.cache.pin_prefixes(s.groups["b"]) == 6  # the oldest entry makes room: one of "a"'s two
    assert len(s.pins) == 2 and not any(op.kind == "rm" for op in s.cache.take_pending_ops())
    clock.now += 1
    s.submit(request("c", list(range(70, 80)), pins=(7,)))
    run_prompt(s)
    s.cache.pin_prefixes(s.groups["c"])
    assert MemOp("rm", first) in s.cache.take_pending_ops()  # the snapshot goes with its last entry


def test_snapshots_are_bounded_by_the_cells_they_hold() -> None:
    s = Scheduler(config(max_pinned_tokens=15), Clock())
    s.submit(request("a", list(range(5, 15)), pins=(5,)))
    run_prompt(s)
    assert s.cache.pin_prefixes(s.groups["a"]) == 5 and len(s.pins) == 1
    s.submit(request("b", list(range(50, 58)), pins=(5,)))
    run_prompt(s)
    s.cache.pin_prefixes(s.groups["b"])
    # 10 + 8 cells > 15: "a"'s snapshot (10 cells, though its entry is 5 tokens) is dropped for "b"'s
    assert [p.tokens[0] for p in s.pins] == [50]
    s.submit(request("c", list(range(70, 90)), pins=(5,)))
    run_prompt(s)
    assert s.cache.pin_prefixes(s.groups["c"]) == 0  # 20 cells can never fit: nothing is pinned or dropped
    assert [p.tokens[0] for p in s.pins] == [50]


def test_short_prefixes_are_not_pinned() -> None:
    s = Scheduler(config(min_pin_tokens=10), Clock())
    s.submit(request("a", [1, 2, 3, 4, 5], pins=(4,)))
    run_prompt(s)
    assert s.cache.pin_prefixes(s.groups["a"]) == 0 and not s.pins


def test_evict_idle_drops_least_recently_used() -> None:
    clock = Clock()
    s = Scheduler(config(), clock)
    for i, rid in enumerate(("a", "b")):
        clock.now += 1
        s.submit(request(rid, [i + 1, 9]))
        run_prompt(s)
        s.finish(s.groups[rid].seqs[0])
    assert s.cache.evict_idle()
    assert [slot.tokens for slot in s.slots].count([]) == 1
    assert any(op.kind == "rm" for op in s.cache.take_pending_ops())


def test_identical_prompt_with_kept_logits_is_reused_whole() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3], n=2))
    run_prompt(s)
    lead = s.groups["a"].seqs[0]
    s.cache.note_prompt_logits(lead)
    for seq in s.groups["a"].seqs:
        s.finish(seq)
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
    s.cache.note_prompt_logits(s.groups["a"].seqs[0])
    s.finish(s.groups["a"].seqs[0])
    s.submit(request("b", [1, 2, 9]))  # reuses [1, 2] only: position 2 is rewritten
    run_prompt(s)
    s.finish(s.groups["b"].seqs[0])
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
    s.finish(s.groups["a"].seqs[0])
    s.finish(s.groups["b"].seqs[0])
    s.submit(request("d", [7, 7, 7, 9]))
    plan = s.schedule()
    assert not [op for op in plan.mem_ops if op.kind == "cp"]
    assert plan.admitted[0].cached_tokens == 3
    s3 = Scheduler(config(min_copy_tokens=4), Clock())
    s3.submit(request("a", [7, 7, 1]))
    run_prompt(s3)
    s3.finish(s3.groups["a"].seqs[0])
    s3.submit(request("c", [7, 7, 1, 5, 6]))  # a follow-up turn: its own slot, no copy, reuse kept
    plan = s3.schedule()
    assert not [op for op in plan.mem_ops if op.kind == "cp"]
    assert plan.admitted[0].cached_tokens == 3


def test_a_short_prefix_held_by_a_busy_slot_is_taken_from_an_idle_one_in_place() -> None:
    """Every slot holds the same short system prompt: the first holder found is busy (a copy, refused
    below min_copy_tokens), but the idle slot holds the prefix too and is reused in place."""
    s = Scheduler(config(min_copy_tokens=8), Clock())
    s.submit(request("a", [7, 7, 7, 1, 1]))
    run_prompt(s)
    s.submit(request("b", [7, 7, 7, 2, 2]))
    run_prompt(s)
    s.finish(s.groups["b"].seqs[0])  # "a" still runs in slot 0; slot 1 is idle, holding 7 7 7 2 2
    s.submit(request("c", [7, 7, 7, 3, 3]))
    plan = s.schedule()
    assert plan.admitted[0].cached_tokens == 3
    assert plan.admitted[0].seqs[0].slot == 1 and not [op for op in plan.mem_ops if op.kind == "cp"]


def test_a_forgotten_slot_is_emptied_and_its_cells_dropped() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3, 4]))
    run_prompt(s)
    seq = s.groups["a"].seqs[0]
    s.cache.forget(seq.slot)  # owned: a running sequence's slot is never forgotten
    assert s.slots[seq.slot].owner is seq and not s.cache.take_pending_ops()
    s.abort("a")
    s.cache.forget(seq.slot)
    assert s.slots[seq.slot].tokens == [] and MemOp("rm", seq.slot) in s.cache.take_pending_ops()
    s.submit(request("b", [1, 2, 3, 9]))
    assert s.schedule().admitted[0].cached_tokens == 0  # nothing suspect is reused


def test_tokens_held_counts_running_and_idle_slots_not_pins() -> None:
    s = Scheduler(config(), Clock())
    s.submit(request("a", [1, 2, 3, 4, 5, 6], pins=(4,)))
    run_prompt(s)
    assert s.cache.tokens_held() == 6
    s.cache.pin_prefixes(s.groups["a"])
    assert s.cache.tokens_held() == 6  # a pin's cells are in host memory, not in the KV cache
