"""engine/thought.py: thought accounting on token ids, the forced close and the answer bound."""

from __future__ import annotations

from itertools import pairwise

import pytest

from qwenhost.engine.protocol import ReasoningBudget
from qwenhost.engine.thought import ThoughtPhase, ThoughtTracker

OPEN, CLOSE, NL, WORD = 1, 2, 3, 4  # NL's piece is b"\n\n"
PIECES = {OPEN: b"<think>", CLOSE: b"</think>", NL: b"\n\n", WORD: b"w"}


def run(tracker: ThoughtTracker, tokens: list[int], pieces: dict[int, bytes] = PIECES) -> list[int]:
    """Feed tokens as the engine would, inserting forced tokens in place of sampled ones."""
    out: list[int] = []
    pending: list[int] = []
    for sampled in tokens:
        token = pending.pop(0) if pending else sampled
        out.append(token)
        pending += tracker.on_token(token, pieces[token])
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
    lt, think, lt_slash = 9, 10, 11
    pieces = {**PIECES, lt: b"<", think: b"think>", lt_slash: b"</"}
    tracker = ThoughtTracker(spec(budget=5, open_tokens=(lt, think), close_tokens=(lt_slash, think)))
    out = run(tracker, [lt, think] + [WORD] * 10, pieces)
    assert out[:9] == [lt, think, WORD, WORD, WORD, WORD, lt_slash, think, WORD]
    assert tracker.num_thought_tokens == 5  # four words and the close tag's first token
    assert tracker.phase is ThoughtPhase.ANSWER


def split(text: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


def feed(tracker: ThoughtTracker, pieces: list[bytes]) -> list[bool]:
    """Feed byte pieces (ids do not matter for matching); true for each piece counted as thought."""
    counted = []
    for piece in pieces:
        before = tracker.num_thought_tokens
        tracker.on_token(0, piece)
        counted.append(tracker.num_thought_tokens > before)
    return counted


def test_tags_are_found_in_the_bytes_whatever_tokens_spell_them() -> None:
    # SmolLM2 writes an empty thought as `<` `think` `></` `think` `>`: the thought holds one token.
    tracker = ThoughtTracker(spec())
    assert feed(tracker, [b"<", b"think", b"></", b"think", b">", b"\n\n", b"A"]) == [False] * 3 + [True] + [False] * 3
    assert tracker.phase is ThoughtPhase.ANSWER and tracker.num_answer_tokens == 1
    # Tags cut anywhere: the token that completes a tag is never thought.
    tracker = ThoughtTracker(spec())
    text = b"<think>\nhmm</think>\n\nok"
    assert feed(tracker, split(text, 3, 9, 13, 16, 19)) == [False, False, True, True, False, False]
    assert tracker.num_thought_tokens == 2 and tracker.num_answer_tokens == 1


def test_a_token_holding_the_close_and_answer_text_is_answer() -> None:
    tracker = ThoughtTracker(spec(open_at_start=True, max_answer_tokens=2))
    assert feed(tracker, [b"hmm", b"</thi", b"nk>\n", b"\n", b"The", b" end"]) == [True, True] + [False] * 4
    assert tracker.num_answer_tokens == 2 and tracker.is_answer_done
    tracker = ThoughtTracker(spec(open_at_start=True, max_answer_tokens=2))
    feed(tracker, [b"hmm</think>\n\nThe", b" end"])
    assert tracker.num_thought_tokens == 0 and tracker.num_answer_tokens == 2
    tracker = ThoughtTracker(spec())
    feed(tracker, [b"<think>a</think>b"])  # opened, thought and answered in one token
    assert tracker.num_thought_tokens == 0 and tracker.num_answer_tokens == 1


def test_the_open_tag_counts_only_at_the_very_start() -> None:
    tracker = ThoughtTracker(spec())
    feed(tracker, [b"\n", b"<think>", b"x", b"</think>"])
    assert tracker.phase is ThoughtPhase.ANSWER
    assert tracker.num_thought_tokens == 0 and tracker.num_answer_tokens == 4
    tracker = ThoughtTracker(spec())
    feed(tracker, [b"<thi", b"nking", b"</think>"])  # a prefix of the tag that goes elsewhere is answer
    assert tracker.num_thought_tokens == 0 and tracker.num_answer_tokens == 3


def test_the_format_s_own_tags() -> None:
    tracker = ThoughtTracker(spec(open_text=b"<seed:think>", close_text=b"</seed:think>"))
    counted = feed(tracker, [b"<seed:", b"think>", b"a", b"</think>", b"</seed", b":think>", b"b"])
    assert counted == [False, False, True, True, True, False, False]
    assert tracker.num_answer_tokens == 1


def test_a_thought_needs_a_close_tag() -> None:
    with pytest.raises(ValueError, match="close tag"):
        ThoughtTracker(spec(close_text=b""))
