"""parsing/reasoning.py: the thought/answer split, run with three chunkings that must fold alike."""

from __future__ import annotations

import random

import pytest

from qwenhost.core.events import ChatEvent, ContentDelta, ReasoningDelta, fold
from qwenhost.parsing.base import PlainParser
from qwenhost.parsing.reasoning import ReasoningParser


def chunkings(text: str) -> list[list[str]]:
    rng = random.Random(len(text))
    randoms = []
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 6)))) if len(text) > 1 else []
        randoms.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return [[text], list(text), *randoms]


def run(chunks: list[str], *, starts_inside: bool) -> tuple[str | None, str, list[ChatEvent]]:
    parser = ReasoningParser(0, PlainParser(0), starts_inside=starts_inside)
    events: list[ChatEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    answer = fold(events).choices
    if not answer:
        return None, "", events
    return answer[0].reasoning_content, answer[0].content, events


CASES = [
    # (output, starts_inside, reasoning_content, content)
    ("<think>\nLet me see.\n</think>\n\nThe answer.", False, "Let me see.", "The answer."),
    ("Let me see.\n</think>\n\nThe answer.", True, "Let me see.", "The answer."),
    ("The answer, no thought.", False, None, "The answer, no thought."),
    ("<think>\n\n</think>\n\nDirect.", False, None, "Direct."),
    ("<think>\nstill thinking when cut\n", False, "still thinking when cut", ""),
    ("truncated inside the prompt's thought", True, "truncated inside the prompt's thought", ""),
    ("<thi", False, None, "<thi"),
    ("<thinking is not the tag", False, None, "<thinking is not the tag"),
    (" <think>late</think>", False, None, " <think>late</think>"),
    ("a\n\nb\n</think>\n\nc\n\nd\n", True, "a\n\nb", "c\n\nd\n"),
    ("x</thi", True, "x</thi", ""),
    ("x</think>y</think>z", True, "x", "y</think>z"),
    ("\n\n思考する\n</think>\n\n答え 🎉", True, "思考する", "答え 🎉"),
    ("</think>\n\n\n", True, None, ""),
    ("<think>a</think>b<think>c", False, "a", "b<think>c"),
]


@pytest.mark.parametrize(("output", "starts_inside", "reasoning", "content"), CASES)
def test_split_is_the_same_for_every_chunking(
    output: str, starts_inside: bool, reasoning: str | None, content: str
) -> None:
    results = {(r, c) for r, c, _ in (run(ch, starts_inside=starts_inside) for ch in chunkings(output))}
    assert results == {(reasoning, content)}


def test_reasoning_is_streamed_before_the_close_tag_arrives() -> None:
    parser = ReasoningParser(0, PlainParser(0), starts_inside=True)
    assert parser.is_reasoning
    assert parser.feed("step one") == [ReasoningDelta(0, "step one")]
    assert parser.feed("\n") == []  # a newline might end the thought: held
    assert parser.feed("step two</th") == [ReasoningDelta(0, "\nstep two")]
    assert parser.is_reasoning
    assert parser.feed("ink>\n\nHi") == [ContentDelta(0, "Hi")]
    assert not parser.is_reasoning


def test_opening_waits_for_the_tag_and_is_not_reasoning() -> None:
    parser = ReasoningParser(0, PlainParser(0), starts_inside=False)
    assert parser.feed("<thi") == []
    assert not parser.is_reasoning
    assert parser.feed("nk>") == []
    assert parser.is_reasoning


class RecordingParser(PlainParser):
    def __init__(self) -> None:
        super().__init__(0)
        self.fed: list[str] = []
        self.finished = False

    def feed(self, text: str) -> list[ChatEvent]:
        self.fed.append(text)
        return super().feed(text)

    def finish(self) -> list[ChatEvent]:
        self.finished = True
        return []


def test_inner_parser_gets_only_the_answer_and_is_finished() -> None:
    inner = RecordingParser()
    parser = ReasoningParser(0, inner, starts_inside=True)
    for ch in "plan</think>\n\n<tool_call>{}</tool_call>":
        parser.feed(ch)
    parser.finish()
    assert "".join(inner.fed) == "<tool_call>{}</tool_call>"
    assert inner.finished


def test_custom_tags() -> None:
    parser = ReasoningParser(0, PlainParser(0), starts_inside=False, open_tag="[T]", close_tag="[/T]")
    events = parser.feed("[T]hm[/T]ok") + parser.finish()
    assert fold(events).choices[0].reasoning_content == "hm"
    assert fold(events).choices[0].content == "ok"
