"""engine/thought.py: thought accounting on token ids, the forced close and the answer bound."""

from __future__ import annotations

from qwenhost.engine.protocol import ReasoningBudget
from qwenhost.engine.thought import ThoughtPhase, ThoughtTracker

OPEN, CLOSE, NL, WORD = 1, 2, 3, 4  # NL's piece is b"\n\n"
PIECES = {OPEN: b"<think>", CLOSE: b"</think>", NL: b"\n\n", WORD: b"w"}


def run(tracker: ThoughtTracker, tokens: list[int]) -> list[int]:
    """Feed tokens as the engine would, inserting forced tokens in place of sampled ones."""
    out: list[int] = []
    pending: list[int] = []
    for sampled in tokens:
        token = pending.pop(0) if pending else sampled
        out.append(token)
        pending += tracker.on_token(token, PIECES[token])
    return out


def spec(**kw: object) -> ReasoningBudget:
    values: dict[str, object] = {
        "budget": None,
        "close_tokens": (CLOSE,),
        "open_at_start": False,
        "open_tokens": (OPEN,),
    }
    values.update(kw)
    return ReasoningBudget(**values)  # type: ignore[arg-type]


def test_budget_forces_the_close_after_exactly_budget_thought_tokens() -> None:
    for budget in (1, 2, 7):
        tracker = ThoughtTracker(spec(budget=budget))
        out = run(tracker, [OPEN] + [WORD] * 20)
        assert out[: budget + 2] == [OPEN] + [WORD] * budget + [CLOSE]
        assert tracker.num_thought_tokens == budget
        assert tracker.phase is ThoughtPhase.ANSWER


def test_thought_inside_the_prompt_counts_from_the_first_token() -> None:
    tracker = ThoughtTracker(spec(budget=3, open_at_start=True))
    out = run(tracker, [WORD] * 10)
    assert out[:4] == [WORD, WORD, WORD, CLOSE]
    assert tracker.num_thought_tokens == 3


def test_natural_close_within_budget_is_not_forced() -> None:
    tracker = ThoughtTracker(spec(budget=10))
    out = run(tracker, [OPEN, WORD, WORD, CLOSE, NL, WORD, WORD])
    assert out == [OPEN, WORD, WORD, CLOSE, NL, WORD, WORD]
    assert tracker.num_thought_tokens == 2
    assert tracker.num_answer_tokens == 2  # the separator newlines after the close are not answer


def test_answer_bound_applies_only_after_the_thought() -> None:
    tracker = ThoughtTracker(spec(budget=None, max_answer_tokens=2))
    for token in [OPEN] + [WORD] * 50:
        tracker.on_token(token, PIECES[token])
        assert not tracker.is_answer_done  # max_tokens never bounds the thought
    tracker.on_token(CLOSE, PIECES[CLOSE])
    tracker.on_token(NL, PIECES[NL])
    tracker.on_token(WORD, PIECES[WORD])
    assert not tracker.is_answer_done
    tracker.on_token(WORD, PIECES[WORD])
    assert tracker.is_answer_done


def test_output_without_a_thought_is_all_answer() -> None:
    tracker = ThoughtTracker(spec(budget=1, max_answer_tokens=3))
    assert run(tracker, [WORD, NL, WORD]) == [WORD, NL, WORD]
    assert tracker.phase is ThoughtPhase.ANSWER
    assert tracker.num_thought_tokens == 0
    assert tracker.num_answer_tokens == 3
    assert tracker.is_answer_done


def test_multi_token_tags() -> None:
    # A tag spelled in several tokens: the close is forced early enough that it fits in the budget.
    tracker = ThoughtTracker(spec(budget=5, open_tokens=(9, OPEN), close_tokens=(9, CLOSE)))
    pieces = {**PIECES, 9: b"<"}
    out: list[int] = []
    pending: list[int] = []
    for sampled in [9, OPEN] + [WORD] * 10:
        token = pending.pop(0) if pending else sampled
        out.append(token)
        pending += tracker.on_token(token, pieces[token])
    assert out[:9] == [9, OPEN, WORD, WORD, WORD, WORD, 9, CLOSE, WORD]
    assert tracker.num_thought_tokens == 5  # four words and the close tag's first token
