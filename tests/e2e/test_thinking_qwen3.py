"""Thinking, budgets and partial mode on the real engine, with a tiny random-weight Qwen3 GGUF.

The weights are random, so the text is gibberish: these tests check structure, counts and shapes. The
sampler is steered with logit_bias (+100 makes a token certain, -100 impossible) and seeds, which makes
every answer deterministic; forced tokens (the close tag at the budget) bypass the sampler and its biases.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.tiny_qwen3 import token_id
from tests.support.server import REPO, RunningServer, running_server

pytestmark = pytest.mark.e2e

CONTEXT = 1024
HYBRID = "tiny-qwen3"  # detected as qwen3: thinking on by default, stream-only like DashScope's open-source Qwen3
HYBRID_ANY = "tiny-qwen3-any"  # the same model with non-streaming thinking allowed by config
THINKER = "tiny-thinker"  # the same GGUF served as qwen3-thinking-2507 (thinking only)
USER = [{"role": "user", "content": "hi"}]

THINK, CLOSE = token_id("<think>"), token_id("</think>")
NO_END = {str(token_id("<|im_end|>")): -100, str(token_id("<|endoftext|>")): -100}
NO_NEWLINE = {str(token_id("\n")): -100, str(256): -100}  # 256 is the merged "\n\n" token
ONLY_THINK = {str(THINK): 100, str(CLOSE): -100, **NO_END}  # every sampled token is <think>, none closes
NEVER_CLOSE = {str(CLOSE): -100, **NO_END, **NO_NEWLINE}


def config(gguf: Path) -> str:
    common = f'path = "{gguf}"\nparallel = 2\ncontext_length = {CONTEXT}\nthreads = 1\n'
    return (
        f'[[models]]\nname = "{HYBRID}"\n{common}'
        f'[[models]]\nname = "{HYBRID_ANY}"\n{common}stream_only_thinking = false\n'
        f'[[models]]\nname = "{THINKER}"\n{common}family = "qwen3-thinking-2507"\nstream_only_thinking = false\n'
    )


@pytest.fixture(scope="module")
def qwen3_server(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("qwen3"), config=config(tiny_qwen3_gguf)) as srv:
        yield srv


@pytest.fixture(scope="module")
def qclient(qwen3_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=qwen3_server.base_url, api_key="sk-test", max_retries=0, timeout=60)


def stream_answer(client: openai.OpenAI, **kw: Any) -> tuple[str, str, Any, str | None]:
    """(reasoning, content, usage, finish_reason) folded from a stream with usage."""
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next((c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None)
    return reasoning, content, chunks[-1].usage, finish


def sse_frames(server: RunningServer, body: dict[str, Any]) -> list[Any]:
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


# -- family ---------------------------------------------------------------------------------------
def test_family_detection_in_models_list(qwen3_server: RunningServer) -> None:
    models = {m["id"]: m["capabilities"] for m in httpx.get(f"{qwen3_server.base_url}/models").json()["data"]}
    hybrid = models[HYBRID]
    assert (hybrid["family"], hybrid["thinking"], hybrid["thinking_default"]) == ("qwen3", "hybrid", True)
    assert hybrid["soft_switch"] and hybrid["stream_only_thinking"] and hybrid["tool_syntax"] == "hermes_json"
    assert hybrid["sampling_thinking"]["temperature"] == 0.6 and hybrid["sampling"]["temperature"] == 0.7
    assert not models[HYBRID_ANY]["stream_only_thinking"]
    assert (models[THINKER]["family"], models[THINKER]["thinking"]) == ("qwen3-thinking-2507", "always")


def test_models_cli_shows_the_family(tiny_qwen3_gguf: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "qwenhost", "models", "--model", str(tiny_qwen3_gguf), "--threads", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = dict(line.strip().split(":", 1) for line in out.splitlines()[1:])
    assert rows["family"].strip() == "qwen3" and rows["thinking"].strip() == "hybrid"
    assert "temperature=0.6" in rows["sampling_thinking"]


# -- rendering on/off -----------------------------------------------------------------------------
def test_enable_thinking_switches_the_prompt(qclient: openai.OpenAI) -> None:
    off = qclient.chat.completions.create(
        model=HYBRID, messages=USER, max_tokens=1, extra_body={"enable_thinking": False}
    )
    assert getattr(off.choices[0].message, "reasoning_content", None) is None
    assert off.usage is not None and off.usage.completion_tokens_details is None
    _, _, on_usage, _ = stream_answer(qclient, model=HYBRID, messages=USER, max_tokens=1)
    _, _, thinker_usage, _ = stream_answer(qclient, model=THINKER, messages=USER, max_tokens=1)
    # Off adds the empty thought <think> "\n\n" </think> "\n\n"; the thinking-only prompt opens it: <think> "\n".
    assert off.usage.prompt_tokens - on_usage.prompt_tokens == 4
    assert thinker_usage.prompt_tokens - on_usage.prompt_tokens == 2


def test_soft_switch_no_think(qclient: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi /no_think"}]
    soft = qclient.chat.completions.create(model=HYBRID, messages=messages, max_tokens=2)  # off: non-streaming is fine
    hard = qclient.chat.completions.create(
        model=HYBRID, messages=messages, max_tokens=2, extra_body={"enable_thinking": False}
    )
    assert soft.usage is not None and hard.usage is not None
    assert soft.usage.prompt_tokens == hard.usage.prompt_tokens
    assert getattr(soft.choices[0].message, "reasoning_content", None) is None


# -- budget ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [1, 6, 23])
def test_budget_closes_the_thought_and_the_answer_follows(qclient: openai.OpenAI, budget: int) -> None:
    kw: dict[str, Any] = {
        "model": HYBRID_ANY,
        "messages": USER,
        "max_tokens": 4,
        "seed": 1,
        "extra_body": {"thinking_budget": budget, "logit_bias": ONLY_THINK},
    }
    done = qclient.chat.completions.create(**kw)
    message = done.choices[0].message
    assert message.reasoning_content == "<think>" * budget  # type: ignore[attr-defined]
    assert message.content == "<think>" * 4  # the answer came, bounded by max_tokens alone
    assert done.choices[0].finish_reason == "length"
    usage = done.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == budget
    assert usage.completion_tokens == 1 + budget + 1 + 4  # <think>, the thought, the forced </think>, the answer
    reasoning, content, stream_usage, finish = stream_answer(qclient, **kw)
    assert (reasoning, content, finish) == (message.reasoning_content, message.content, "length")  # type: ignore[attr-defined]
    assert stream_usage.completion_tokens_details.model_dump() == usage.completion_tokens_details.model_dump()
    assert stream_usage.completion_tokens == usage.completion_tokens


def test_budget_on_a_thinking_only_model_with_random_text(qclient: openai.OpenAI) -> None:
    kw: dict[str, Any] = {
        "model": THINKER,
        "messages": USER,
        "max_tokens": 5,
        "seed": 7,
        "extra_body": {"thinking_budget": 12, "logit_bias": NEVER_CLOSE},
    }
    done = qclient.chat.completions.create(**kw)
    usage = done.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 12
    assert usage.completion_tokens == 12 + 1 + 5
    assert done.choices[0].message.reasoning_content  # type: ignore[attr-defined]
    assert done.choices[0].message.content and done.choices[0].finish_reason == "length"
    reasoning, content, _, _ = stream_answer(qclient, **kw)
    assert (reasoning, content) == (done.choices[0].message.reasoning_content, done.choices[0].message.content)  # type: ignore[attr-defined]


def test_max_tokens_does_not_bound_the_thought(qclient: openai.OpenAI) -> None:
    done = qclient.chat.completions.create(
        model=THINKER,
        messages=USER,
        max_tokens=3,
        seed=3,
        extra_body={"max_completion_tokens": 30, "logit_bias": NEVER_CLOSE},
    )
    usage = done.usage
    assert usage is not None and usage.completion_tokens_details is not None
    # A thought cut by max_completion_tokens (thought + answer) is all reasoning.
    assert usage.completion_tokens == 30 and usage.completion_tokens_details.reasoning_tokens == 30
    assert done.choices[0].message.content == "" and done.choices[0].finish_reason == "length"


# -- streaming shapes (spec §2.4) -------------------------------------------------------------------
def test_thinking_stream_shapes(qwen3_server: RunningServer) -> None:
    body = {
        "model": THINKER,
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 3,
        "seed": 5,
        "thinking_budget": 4,
        "logit_bias": NEVER_CLOSE,
    }
    frames = sse_frames(qwen3_server, body)
    assert len({f["id"] for f in frames}) == 1 and len({f["created"] for f in frames}) == 1
    assert frames[0]["choices"][0]["delta"] == {"content": None, "role": "assistant", "reasoning_content": ""}
    deltas = [f["choices"][0]["delta"] for f in frames[1:-2]]
    kinds = ["reasoning" if d["content"] is None else "content" for d in deltas]
    assert kinds == sorted(kinds, key=lambda k: k == "content")  # reasoning first, then the answer
    assert "reasoning" in kinds and "content" in kinds
    for delta in deltas:
        if delta["content"] is None:
            assert set(delta) == {"content", "reasoning_content"} and delta["reasoning_content"]
        else:
            assert delta == {"content": delta["content"], "reasoning_content": None}
    finish = frames[-2]["choices"][0]
    assert finish["delta"] == {"content": "", "reasoning_content": None} and finish["finish_reason"] == "length"
    assert all(f["usage"] is None for f in frames[:-1])
    last = frames[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4
    assert last["usage"]["completion_tokens"] == 4 + 1 + 3

    whole = httpx.post(f"{qwen3_server.base_url}/chat/completions", json={**body, "stream": False}, timeout=60).json()
    message = whole["choices"][0]["message"]
    assert message["reasoning_content"] == "".join(d["reasoning_content"] or "" for d in deltas)
    assert message["content"] == "".join(d["content"] or "" for d in deltas)
    for key in ("completion_tokens", "completion_tokens_details", "prompt_tokens"):
        assert whole["usage"][key] == last["usage"][key]  # cached_tokens may differ: the prefix is now cached


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (HYBRID, {}, "parameter.enable_thinking must be set to false for non-streaming calls"),
        (THINKER, {"enable_thinking": False}, "The value of the enable_thinking parameter is restricted to True."),
        (HYBRID_ANY, {"n": 2}, "The n parameter must be 1 when enable_thinking is true."),
        (
            HYBRID_ANY,
            {"thinking_budget": 0},
            f"The thinking_budget parameter must be a positive integer and not greater than {CONTEXT}",
        ),
        (
            HYBRID_ANY,
            {"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "json please"}]},
            "Json mode response is not supported when enable_thinking is true",
        ),
        (
            HYBRID_ANY,
            {"messages": [*USER, {"role": "assistant", "content": "Hel", "partial": True}]},
            "Partial mode is not supported when enable_thinking is true",
        ),
    ],
)
def test_thinking_errors(qwen3_server: RunningServer, model: str, extra: dict[str, Any], message: str) -> None:
    body = {"model": model, "messages": USER, **extra}
    r = httpx.post(f"{qwen3_server.base_url}/chat/completions", json=body, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["message"], error["code"], error["type"]) == (
        message,
        "invalid_parameter_error",
        "invalid_request_error",
    )


# -- partial mode and preserve_thinking -----------------------------------------------------------
def test_partial_mode_continues_the_prefix(qclient: openai.OpenAI) -> None:
    only_z = {str(ord("Z")): 100}
    kw: dict[str, Any] = {
        "model": HYBRID,
        "max_tokens": 4,
        "extra_body": {"enable_thinking": False, "logit_bias": only_z},
    }
    base = qclient.chat.completions.create(messages=USER, **kw)
    partial_messages = [*USER, {"role": "assistant", "content": "Hello", "partial": True}]
    cont = qclient.chat.completions.create(messages=partial_messages, **kw)
    assert cont.choices[0].message.content == "ZZZZ"  # only the continuation, never the prefix
    assert base.usage is not None and cont.usage is not None
    assert cont.usage.prompt_tokens == base.usage.prompt_tokens + len("Hello")  # the prefix is input
    _, streamed, _, finish = stream_answer(qclient, messages=partial_messages, **kw)
    assert (streamed, finish) == ("ZZZZ", "length")


def test_preserve_thinking_puts_history_thoughts_in_the_prompt(qclient: openai.OpenAI) -> None:
    history = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
        {"role": "user", "content": "Q2"},
    ]
    kw: dict[str, Any] = {"model": HYBRID, "messages": history, "max_tokens": 1}
    plain = qclient.chat.completions.create(**kw, extra_body={"enable_thinking": False})
    kept = qclient.chat.completions.create(**kw, extra_body={"enable_thinking": False, "preserve_thinking": True})
    assert plain.usage is not None and kept.usage is not None
    # <think> "\n" "R" "1" "\n" </think> "\n\n"
    assert kept.usage.prompt_tokens - plain.usage.prompt_tokens == 7
