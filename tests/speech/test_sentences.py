"""speech/sentences.py: the splitter is incremental only — whole, per character and random chunkings agree."""

from __future__ import annotations

import random

import pytest

from qwenhost.speech.sentences import SentenceSplitter

TEXTS = [
    "Hello, I am Qwen. It costs 3.50 dollars today! Is that fine?\nYes",
    "你好，我是通义千问。今天天气很好！我们去公园吗？好的",
    "- one\n- two\n\n## Heading\nText without an end",
    "a" * 450 + " tail words, and more",
]


def split(text: str, cuts: list[int]) -> list[str]:
    splitter = SentenceSplitter()
    out: list[str] = []
    last = 0
    for cut in [*cuts, len(text)]:
        out += splitter.feed(text[last:cut])
        last = cut
    return out + splitter.finish()


@pytest.mark.parametrize("text", TEXTS)
def test_three_chunkings_agree(text: str) -> None:
    whole = split(text, [])
    assert split(text, list(range(1, len(text)))) == whole
    rng = random.Random(7)
    assert split(text, sorted(rng.sample(range(1, len(text)), min(10, len(text) - 1)))) == whole


def test_sentences_end_at_punctuation_and_keep_decimals_whole() -> None:
    assert split(TEXTS[0], []) == ["Hello, I am Qwen.", "It costs 3.50 dollars today!", "Is that fine?", "Yes"]
    assert split(TEXTS[1], []) == ["你好，我是通义千问。", "今天天气很好！", "我们去公园吗？", "好的"]


def test_a_sentence_is_spoken_as_soon_as_it_ends() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello there") == []
    assert splitter.feed("! And") == ["Hello there!"]


def test_long_runs_are_cut_and_nothing_unspeakable_is_sent() -> None:
    pieces = split(TEXTS[3], [])
    assert all(len(p) <= 200 for p in pieces) and "".join(pieces).replace(" ", "") == TEXTS[3].replace(" ", "")
    assert split("...\n\n---\n", []) == []
