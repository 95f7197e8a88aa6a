"""engine/thought.py (ThoughtTracker, on token ids) and the service's reading of the same tokens
(service/output.py's ChoicePipeline around parsing/reasoning.py's ReasoningParser) are two state
machines for one concept: reasoning_tokens, the thinking_budget and the answer bound all depend on
them agreeing. These tests drive both with the same token streams — real tokenizers (a byte vocabulary
whose tags are single special tokens, as in every Qwen thinking model's vocabulary, and the embedded
SmolLM2 one, where a tag is several tokens), every thinking family's tags and prompt state, with and
without budgets — and require the same split, token for token.

Both find a tag in the text (the tracker in its bytes), not by token ids, so a tag spelled in other
tokens than its canonical ones — cut across tokens, or merged with a neighbour: SmolLM2 writes
``<think></think>`` as ``<`` ``think`` ``></`` ``think`` ``>`` — splits alike too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from qwenhost.engine.protocol import ReasoningBudget, TokenOut
from qwenhost.engine.thought import ThoughtPhase, ThoughtTracker
from qwenhost.formats.base import ModelFormat
from qwenhost.formats.families import ALL
from qwenhost.parsing.base import PlainParser
from qwenhost.service.output import ChoicePipeline
from qwenhost.service.turn import turn_parser
from tests.support.grammar_vocab import byte_vocab, embedded_vocab

THINKING = [f for f in ALL if f.has_thinking]
BUDGETS = (None, 1, 2, 5, 40)


@dataclass
class Vocab:
    name: str
    tokenize: Callable[[str], list[int]]
    piece: Callable[[int], bytes]


@pytest.fixture(scope="module")
def bytes_vocab() -> Vocab:
    tiny = byte_vocab()
    names = {v: k.encode() for k, v in tiny.special_tokens.items()}
    return Vocab("bytes", tiny.tokenize, lambda t: names.get(t) or bytes([t]))


@pytest.fixture(scope="module")
def smollm2_vocab() -> Vocab:
    real = embedded_vocab()
    return Vocab("smollm2", real.tokenize, lambda t: bytes(real.tokenizer.decode_bytes([t])))


def outputs(fmt: ModelFormat, starts_inside: bool) -> list[str]:
    """Model outputs in the shapes spec §6.3/§6.5 describe, for a prompt that does (not) open the thought."""
    o, c = fmt.think_open, fmt.think_close
    thought = "Let me think.\nFirst, 2 + 2 = 4; then\n\nthe answer.\n"
    answers = ["The answer is 4.", "\n\nLeading newlines, then text.", "", "tags in the answer: </think> <think>"]
    if starts_inside:
        shapes = [f"{thought}{c}\n\n{a}" for a in answers] + [thought, f"{c}{answers[0]}", f"\n{c}\n\n"]
    else:
        shapes = [f"{o}\n{thought}{c}\n\n{a}" for a in answers]
        shapes += [answers[0], f"{o}{thought}", f"{o}{c}", f"<thin{answers[0]}", f"{answers[0]}{o}x{c}y", ""]
    return shapes


def tokenizations(vocab: Vocab, text: str, seed: int) -> Iterator[list[int]]:
    """The canonical tokenization, then cuts at random places (tags split across tokens) tokenized apart."""
    yield vocab.tokenize(text)
    rng = random.Random(seed)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 6)))) if len(text) > 1 else []
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        yield [t for piece in pieces for t in vocab.tokenize(piece)]


@dataclass
class Run:
    tokens: list[int]
    tracker: ThoughtTracker
    pipeline: ChoicePipeline
    reasoning_by_token: list[bool]  # the service counted this token as reasoning
    thought_by_token: list[bool]  # the tracker did


def run(vocab: Vocab, fmt: ModelFormat, sampled: list[int], starts_inside: bool, budget: int | None) -> Run:
    """Feed the stream as the engine does (forced tokens replace sampled ones) to both machines."""
    spec = ReasoningBudget(
        budget=budget,
        close_tokens=tuple(vocab.tokenize(fmt.think_close)),
        open_at_start=starts_inside,
        open_tokens=tuple(vocab.tokenize(fmt.think_open)),
        close_text=fmt.think_close.encode(),
        open_text=fmt.think_open.encode(),
    )
    tracker = ThoughtTracker(spec)
    parser = turn_parser(PlainParser(0), fmt, "inside" if starts_inside else "open", 0)
    pipeline = ChoicePipeline(0, parser, (), logprobs=False)
    out: list[int] = []
    reasoning: list[bool] = []
    thought: list[bool] = []
    pending: list[int] = []
    for token in sampled:
        token = pending.pop(0) if pending else token
        out.append(token)
        before_service, before_engine = pipeline.reasoning_tokens, tracker.num_thought_tokens
        pending += tracker.on_token(token, vocab.piece(token))
        pipeline.feed(TokenOut(0, token, vocab.piece(token)))
        reasoning.append(pipeline.reasoning_tokens > before_service)
        thought.append(tracker.num_thought_tokens > before_engine)
    return Run(out, tracker, pipeline, reasoning, thought)


def cases(vocab: Vocab, *, canonical: bool) -> Iterator[tuple[ModelFormat, bool, str, list[int], int | None]]:
    for fmt in THINKING:
        for starts_inside in (False, True) if fmt.thinking == "hybrid" else (True,):
            for i, text in enumerate(outputs(fmt, starts_inside)):
                streams = list(tokenizations(vocab, text, seed=i))
                for stream in streams[:1] if canonical else streams[1:]:
                    for budget in BUDGETS:
                        yield fmt, starts_inside, text, stream, budget


def disagreements(vocab: Vocab, *, canonical: bool) -> list[tuple[object, ...]]:
    found = []
    for fmt, starts_inside, text, stream, budget in cases(vocab, canonical=canonical):
        r = run(vocab, fmt, stream, starts_inside, budget)
        if r.reasoning_by_token != r.thought_by_token:
            found.append((fmt.name, starts_inside, budget, text, [vocab.piece(t) for t in r.tokens]))
    return found


def test_single_token_tags_split_alike_on_every_family(bytes_vocab: Vocab) -> None:
    found = disagreements(bytes_vocab, canonical=True)
    assert not found, f"{len(found)} streams split differently, e.g. {found[0]}"


def test_a_budget_bounds_what_the_service_reports(bytes_vocab: Vocab) -> None:
    long_thought = " ".join(["word"] * 60)
    for fmt in THINKING:
        for budget in BUDGETS[1:]:
            for starts_inside in (False, True):
                text = f"{'' if starts_inside else fmt.think_open}\n{long_thought}{fmt.think_close}\n\nAnswer."
                r = run(bytes_vocab, fmt, bytes_vocab.tokenize(text), starts_inside, budget)
                assert r.pipeline.reasoning_tokens == r.tracker.num_thought_tokens <= budget
                assert r.tracker.phase is ThoughtPhase.ANSWER and not r.pipeline.parser.is_reasoning
                assert r.reasoning_by_token == r.thought_by_token


@pytest.mark.parametrize("vocab_name", ["bytes-cut", "smollm2", "smollm2-cut"])
def test_tags_spelled_in_other_tokens_split_alike(vocab_name: str, bytes_vocab: Vocab, smollm2_vocab: Vocab) -> None:
    vocab = bytes_vocab if vocab_name.startswith("bytes") else smollm2_vocab
    found = disagreements(vocab, canonical=not vocab_name.endswith("-cut"))
    assert not found, f"{len(found)} streams split differently, e.g. {found[0]}"
