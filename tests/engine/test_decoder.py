"""The per-sequence decoder: sampling, grammar masks and forced tokens, thought budget, stops, the fault seam."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from qwenhost.core.types import SamplingParams
from qwenhost.engine.llamacpp.decoder import (
    DEFAULT_LOOP_GUARD,
    LOOP_MAX_PERIOD,
    LOOP_SPAN_TOKENS,
    InjectedFault,
    LoopGuard,
    LoopWatch,
    SequenceDecoder,
)
from qwenhost.engine.protocol import GenerationRequest, ReasoningBudget, TokenConstraint
from tests.engine.fakes import FakeSampler

END, A, B, C, CLOSE, X, Y, Z = 0, 1, 2, 3, 4, 5, 6, 7
PIECES = [b"", b"A", b"B", b"C", b"</think>", b"x", b"y", b"z"]


class Vocab:
    """Logits peak at ``best`` (row 0); ``logits`` hands out the same array each time, as llama.cpp does."""

    def __init__(self, best: int = A) -> None:
        self.pieces: Sequence[bytes] = PIECES
        self.eog = frozenset({END})
        self.row = np.zeros(len(PIECES), dtype=np.float32)
        self.row[best] = 5.0

    def logits(self, row: int) -> np.ndarray:
        return self.row


class Runner:
    """FakeSampler reads logits through a runner."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def logits(self, row: int) -> np.ndarray:
        return self.vocab.row


class OnlyToken:
    """A grammar that allows one token, forces ``forced`` when given, and finishes after ``length`` tokens."""

    def __init__(self, allowed: int, forced: list[int] | None = None, length: int = 99) -> None:
        self.mask = np.zeros(len(PIECES), dtype=bool)
        self.mask[allowed] = True
        self.forced = forced or []
        self.length = length
        self.consumed: list[int] = []

    def allowed_tokens(self) -> np.ndarray:
        return self.mask

    def consume(self, token_id: int) -> None:
        self.consumed.append(token_id)

    def forced_tokens(self) -> list[int]:
        return self.forced

    def is_finished(self) -> bool:
        return len(self.consumed) >= self.length


def make(
    vocab: Vocab | None = None,
    constraint: TokenConstraint | None = None,
    loop_guard: LoopGuard | None = None,
    **fields: object,
) -> tuple[SequenceDecoder, FakeSampler]:
    vocab = vocab or Vocab()
    values: dict[str, object] = {"max_new_tokens": 8}
    values.update(fields)
    request = GenerationRequest(
        "r",
        (A,),
        (SamplingParams(),),
        constraint=(lambda: constraint) if constraint is not None else None,
        **values,  # type: ignore[arg-type]
    )
    sampler = FakeSampler(Runner(vocab))  # type: ignore[arg-type]
    if loop_guard is None:
        return SequenceDecoder(request, 0, sampler, vocab), sampler
    return SequenceDecoder(request, 0, sampler, vocab, loop_guard), sampler


def test_samples_and_ends_with_length() -> None:
    decoder, _ = make(max_new_tokens=2)
    first = decoder.next_token(0)
    second = decoder.next_token(0)
    assert (first.token_id, first.piece, first.finish) == (A, b"A", None)
    assert second.finish == "length" and not second.is_end


def test_an_end_token_stops_without_text() -> None:
    decoder, _ = make(Vocab(best=END))
    out = decoder.next_token(0)
    assert out.finish == "stop" and out.is_end and out.piece == b""


def test_a_stop_string_spanning_tokens_stops() -> None:
    vocab = Vocab(best=A)
    decoder, _ = make(vocab, stop_strings=(b"AB",))
    assert decoder.next_token(0).finish is None
    vocab.row[:] = 0
    vocab.row[B] = 5.0
    out = decoder.next_token(0)
    assert out.finish == "stop" and not out.is_end and out.piece == b"B"  # the text keeps it; parsing cuts it


def test_the_injected_fault_raises_inside_the_first_sampling() -> None:
    decoder, sampler = make(inject_fault=True)
    with pytest.raises(InjectedFault, match="injected fault"):
        decoder.next_token(0)
    assert not sampler.accepted  # nothing was sampled


def test_a_grammar_masks_the_row_and_forced_tokens_skip_sampling() -> None:
    grammar = OnlyToken(allowed=C)
    decoder, sampler = make(constraint=grammar)
    assert decoder.next_token(0).token_id == C  # A had the best logit but is not allowed
    grammar.forced = [B]
    assert decoder.next_token(0).token_id == B
    assert grammar.consumed == [C, B] and sampler.accepted == [C, B]


def test_a_finished_grammar_stops_the_choice() -> None:
    decoder, _ = make(constraint=OnlyToken(allowed=A, length=1))
    assert decoder.next_token(0).finish == "stop"


def test_the_thinking_budget_forces_the_close_tag() -> None:
    budget = ReasoningBudget(budget=1, close_tokens=(CLOSE,), open_at_start=True, max_answer_tokens=1)
    decoder, sampler = make(reasoning_budget=budget)
    assert decoder.next_token(0).token_id == A  # one thought token: the budget is spent
    closing = decoder.next_token(0)
    assert closing.token_id == CLOSE and sampler.accepted[-1] == CLOSE  # forced, and the sampler knows
    answer = decoder.next_token(0)
    assert answer.finish == "length"  # max_tokens bounds the answer only


def test_logprobs_come_from_the_raw_row_even_under_a_mask() -> None:
    decoder, _ = make(constraint=OnlyToken(allowed=C), top_logprobs=2)
    out = decoder.next_token(0)
    assert out.token_id == C and out.logprob is not None
    assert out.top[0].token_id == A  # the unmasked favourite is reported as an alternative


def test_kept_logits_are_sampled_without_being_changed() -> None:
    stored = np.zeros(len(PIECES), dtype=np.float32)
    stored[A] = 5.0
    decoder, _ = make(constraint=OnlyToken(allowed=B))
    assert decoder.next_token(-1, stored).token_id == B
    assert stored[A] == 5.0 and np.isfinite(stored).all()  # the mask went to a copy


class ForcesAfter:
    """After ``trigger`` is consumed, the grammar forces ``run`` (once): a fixed key after a free value."""

    def __init__(self, trigger: int, run: list[int], length: int = 99) -> None:
        self.trigger, self.run, self.length = trigger, run, length
        self.consumed: list[int] = []

    def allowed_tokens(self) -> None:
        return None

    def consume(self, token_id: int) -> None:
        self.consumed.append(token_id)

    def forced_tokens(self) -> list[int]:
        if self.consumed and self.consumed[-1] == self.trigger:
            return list(self.run)
        return []

    def is_finished(self) -> bool:
        return len(self.consumed) >= self.length


def test_jump_forward_emits_a_forced_run_with_the_sampled_token() -> None:
    grammar = ForcesAfter(trigger=A, run=[X, Y, Z])
    decoder, sampler = make(constraint=grammar)
    outs = decoder.next_tokens(0)
    assert [o.token_id for o in outs] == [A, X, Y, Z] and [o.piece for o in outs] == [b"A", b"x", b"y", b"z"]
    assert grammar.consumed == [A, X, Y, Z] and sampler.accepted == [A, X, Y, Z]  # penalties see them
    assert decoder.num_generated == 4


def test_jump_forward_stops_at_a_finish_inside_the_run() -> None:
    decoder, _ = make(constraint=ForcesAfter(trigger=A, run=[X, Y, Z]), max_new_tokens=3)
    outs = decoder.next_tokens(0)
    assert [o.token_id for o in outs] == [A, X, Y] and outs[-1].finish == "length"
    finished = make(constraint=ForcesAfter(trigger=A, run=[X, Y, Z], length=2))[0].next_tokens(0)
    assert [o.token_id for o in finished] == [A, X] and finished[-1].finish == "stop"


def test_no_jump_forward_while_logprobs_are_asked_for() -> None:
    decoder, _ = make(constraint=ForcesAfter(trigger=A, run=[X, Y]), top_logprobs=1)
    assert [o.token_id for o in decoder.next_tokens(0)] == [A]  # each forced token then gets its own row


def is_looping(tokens: Sequence[int], guard: LoopGuard) -> bool:
    """What LoopWatch answers after the last of ``tokens``, by the definition: the last span_tokens tokens
    are one block of at most max_period tokens repeated."""
    span = guard.span_tokens
    if span == 0 or len(tokens) < span:
        return False
    tail = list(tokens)[-span:]
    return any(all(tail[i] == tail[i - p] for i in range(p, span)) for p in range(1, guard.max_period + 1))


def watch(tokens: Sequence[int], guard: LoopGuard = DEFAULT_LOOP_GUARD) -> list[bool]:
    w = LoopWatch(guard)
    return [w.push(t) for t in tokens]


def test_a_loop_is_a_whole_span_of_one_repeated_block() -> None:
    block = [11, 12, 13, 14, 15, 16, 17]
    assert watch((block * 40)[:LOOP_SPAN_TOKENS]) == [False] * (LOOP_SPAN_TOKENS - 1) + [True]
    assert not any(watch(list(range(LOOP_SPAN_TOKENS * 2))))  # no period at all
    assert not watch([1] * 10 + list(range(100, 100 + LOOP_SPAN_TOKENS - 10)))[-1]  # the repeat must span it all
    assert not any(watch((list(range(LOOP_MAX_PERIOD + 1)) * 8)[:LOOP_SPAN_TOKENS]))  # a longer period is allowed
    assert watch([5] * 3 + [6] * LOOP_SPAN_TOKENS).index(True) == 3 + LOOP_SPAN_TOKENS - 1  # counted from the 6s


def test_the_span_and_the_period_are_settings() -> None:
    block = list(range(20))
    assert watch(block * 4, LoopGuard(64, 32)).index(True) == 63  # a shorter span fires earlier
    assert not any(watch(block * 100, LoopGuard(64, 16)))  # a block longer than max_period is no loop
    assert not any(watch([7] * 10_000, LoopGuard(0)))  # 0: no guard
    assert watch(block * 3300, LoopGuard(65536, 32)).index(True) == 65535


@pytest.mark.parametrize("guard", [LoopGuard(), LoopGuard(64, 32), LoopGuard(64, 1), LoopGuard(96, 48)])
def test_the_watch_agrees_with_the_definition_token_by_token(guard: LoopGuard) -> None:
    rng = random.Random(7)
    tokens: list[int] = []
    while len(tokens) < 4000:  # random noise and repeated blocks (some broken by one token) of every period
        period = rng.randint(1, guard.max_period + 3)
        block = [rng.randint(0, 3) for _ in range(period)]
        run = (block * (guard.span_tokens // period + 2))[: rng.randint(1, guard.span_tokens + 40)]
        if rng.random() < 0.3:
            run[rng.randrange(len(run))] = 9
        tokens += run + [rng.randint(0, 3) for _ in range(rng.randint(0, 5))]
    answers = watch(tokens, guard)
    expected = [is_looping(tokens[: n + 1], guard) for n in range(len(tokens))]
    assert answers == expected and sum(expected) > 10  # loops of several periods were met, and agreed on


def test_a_loop_guard_is_refused_when_it_cannot_hold_two_blocks() -> None:
    with pytest.raises(ValueError, match="twice"):
        LoopGuard(40, 32)
    with pytest.raises(ValueError, match="span_tokens >= 0"):
        LoopGuard(-1)


def test_constrained_output_that_loops_ends_with_length() -> None:
    decoder, _ = make(constraint=OnlyToken(allowed=B, length=10**6), max_new_tokens=1000)
    outs = [decoder.next_token(0) for _ in range(LOOP_SPAN_TOKENS)]
    assert [o.finish for o in outs[:-1]] == [None] * (LOOP_SPAN_TOKENS - 1) and outs[-1].finish == "length"
    free, _ = make(max_new_tokens=1000)  # free text is never cut for repeating itself
    assert all(free.next_token(0).finish is None for _ in range(LOOP_SPAN_TOKENS * 2))


def test_the_decoder_follows_its_loop_guard() -> None:
    shorter, _ = make(constraint=OnlyToken(allowed=B, length=10**6), loop_guard=LoopGuard(64, 32), max_new_tokens=1000)
    assert [shorter.next_token(0).finish for _ in range(64)][-2:] == [None, "length"]
    off, _ = make(constraint=OnlyToken(allowed=B, length=10**6), loop_guard=LoopGuard(0), max_new_tokens=1000)
    finishes = [off.next_token(0).finish for _ in range(1000)]
    assert finishes[-1] == "length" and finishes[:-1] == [None] * 999  # only max_new_tokens ends it
