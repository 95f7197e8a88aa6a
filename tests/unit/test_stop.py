"""Stop-string matching is incremental: any split of the text gives the same released text."""

from __future__ import annotations

import random

import pytest

from qwenhost.parsing.stop import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def chunkings(text: str) -> list[list[str]]:
    rng = random.Random(len(text))
    cuts = sorted(rng.sample(range(1, len(text)), min(4, len(text) - 1))) if len(text) > 1 else []
    random_split = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return [[text], list(text), random_split]


@pytest.mark.parametrize(
    ("stops", "text", "expected", "hit"),
    [
        (["END"], "hello END world", "hello ", True),
        (["END"], "hello EN", "hello EN", False),
        (["a", "abc"], "xxabc", "xx", True),
        (["\n\n"], "line one\nline two\n\nthree", "line one\nline two", True),
        ([], "anything", "anything", False),
        (["ab"], "aaab", "aa", True),
        (["。"], "こんにちは。さようなら", "こんにちは", True),
    ],
)
def test_stop_matches_in_every_chunking(stops: list[str], text: str, expected: str, hit: bool) -> None:
    for pieces in chunkings(text):
        assert run(stops, pieces) == (expected, hit)


def test_nothing_after_stop() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.feed("ax") == ("a", True)
    assert matcher.feed("more") == ("", True)
    assert matcher.flush() == ""
