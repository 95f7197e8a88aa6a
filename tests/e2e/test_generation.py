"""Sampling, stop, logprobs, n and seeds on the real engine through the official openai SDK."""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Write a short poem about the sea."}]


def stream_text(client: openai.OpenAI, **kwargs: object) -> tuple[dict[int, str], dict[int, str | None]]:
    texts: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    for chunk in client.chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True, **kwargs):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="qwen-plus", messages=MESSAGES, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3


def test_stop_string_is_not_returned(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="qwen-plus", messages=MESSAGES, stop=[" "], max_tokens=40, seed=3)
    content = r.choices[0].message.content or ""
    assert " " not in content and r.choices[0].finish_reason == "stop"


def test_stop_token_id(client: openai.OpenAI) -> None:
    # Force token 28 to be chosen first (logit_bias), and stop on it: nothing is returned, finish is stop.
    r = client.chat.completions.create(
        model="qwen-plus", messages=MESSAGES, max_tokens=10, logit_bias={"28": 100}, extra_body={"stop": [28]}
    )
    assert r.choices[0].message.content == ""
    assert r.choices[0].finish_reason == "stop"


def test_logprobs_cover_the_content(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="qwen-plus",
        messages=MESSAGES,
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
        extra_body={"repetition_penalty": 1.0},
    )
    choice = r.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    for e in entries:
        assert e.logprob is not None and e.logprob <= 0
        assert len(e.top_logprobs) == 3
        assert e.top_logprobs[0].logprob >= e.top_logprobs[-1].logprob
        assert bytes(e.bytes or []).decode("utf-8", errors="replace") == e.token
    # temperature 0 without penalties is greedy: the chosen token is the most likely one
    assert all(e.token == e.top_logprobs[0].token for e in entries)


def test_streamed_logprobs(client: openai.OpenAI) -> None:
    tokens = []
    for chunk in client.chat.completions.create(
        model="qwen-plus", messages=MESSAGES, max_tokens=6, stream=True, logprobs=True, top_logprobs=1
    ):
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                tokens += [e.token for e in choice.logprobs.content]
    assert len(tokens) >= 1


def test_max_input_tokens(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="qwen-plus", messages=MESSAGES, extra_body={"max_input_tokens": 5})
    assert "Range of input length should be [1, 5]" in str(info.value)


def test_penalties_and_top_k_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="qwen-plus",
        messages=MESSAGES,
        max_tokens=8,
        presence_penalty=1.5,
        frequency_penalty=0.5,
        extra_body={"top_k": 5, "repetition_penalty": 1.3},
    )
    assert r.choices[0].message.content
