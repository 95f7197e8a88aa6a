"""Per-alias policy on the real engine: a server started with --model pointing at the tiny Qwen3-format GGUF
(hybrid thinking, stream-only like DashScope's open-source Qwen3). The seed's examples run unchanged on it
(qwen-plus answers without thinking, non-streaming included), and the open-source names think by default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.test_seed_examples import (
    test_async_client,
    test_curl_style_raw_http,
    test_curl_style_raw_streaming,
    test_python_basic,
    test_python_streaming_include_usage,
    test_same_routes_under_v1,
    test_streaming_without_usage_sends_no_usage_chunk,
)
from tests.e2e.test_thinking_qwen3 import ONLY_THINK, USER, stream_answer
from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e

# The seed's examples, collected again here with this module's server, client and aclient fixtures.
SEED_EXAMPLES = (
    test_python_basic,
    test_python_streaming_include_usage,
    test_streaming_without_usage_sends_no_usage_chunk,
    test_async_client,
    test_curl_style_raw_http,
    test_curl_style_raw_streaming,
    test_same_routes_under_v1,
)
STREAM_ONLY = "parameter.enable_thinking must be set to false for non-streaming calls"


@pytest.fixture(scope="module")
def server(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ["--model", str(tiny_qwen3_gguf), "--parallel", "2", "--context-length", "1024", "--threads", "1"]
    with running_server(tmp_path_factory.mktemp("alias-qwen3"), args) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60)


@pytest.fixture
def aclient(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60)


def test_qwen_plus_non_streaming_answers_without_thinking(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model="qwen-plus", messages=USER, max_tokens=4)
    assert done.model == "qwen-plus"
    assert getattr(done.choices[0].message, "reasoning_content", None) is None
    assert done.usage is not None and done.usage.completion_tokens_details is None


# The random weights never open a thought by themselves: the bias makes every sampled token <think>, so a
# thinking prompt (left open for the model, as Qwen3's template does) yields a thought of exactly the budget,
# and a non-thinking prompt (closed by the template) yields the tokens as answer text.
BIASED: dict[str, Any] = {"thinking_budget": 4, "logit_bias": ONLY_THINK}


def test_qwen_plus_streaming_does_not_think(client: openai.OpenAI) -> None:
    reasoning, content, usage, _ = stream_answer(
        client, model="qwen-plus", messages=USER, max_tokens=2, extra_body=BIASED
    )
    assert reasoning == "" and content == "<think>" * 2 and usage.completion_tokens_details is None


@pytest.mark.parametrize("name", ["qwen3-8b", "qwen3-32b", "tiny-qwen3"])
def test_open_source_names_think_by_default_when_streaming(client: openai.OpenAI, name: str) -> None:
    reasoning, content, usage, _ = stream_answer(client, model=name, messages=USER, max_tokens=2, extra_body=BIASED)
    assert reasoning == "<think>" * 4 and content == "<think>" * 2
    assert usage.completion_tokens_details.reasoning_tokens >= 4


def test_qwen3_8b_non_streaming_thinking_is_refused_as_dashscope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=STREAM_ONLY):
        client.chat.completions.create(model="qwen3-8b", messages=USER, max_tokens=2)


def test_models_show_each_policy(server: RunningServer) -> None:
    data = {m["id"]: m for m in httpx.get(f"{server.base_url}/models", timeout=30).json()["data"]}
    assert data["qwen-plus"]["policy"]["thinking_default"] is False
    assert data["qwen-plus"]["capabilities"]["thinking_default"] is False
    assert data["qwen3-8b"]["capabilities"]["thinking_default"] is True
    assert data["qwen3-8b"]["capabilities"]["stream_only_thinking"] is True
    assert "qwen-vl-max" not in data  # no vision model is served


def test_vision_name_without_vision_model_says_how_to_configure_one(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="mmproj"):
        client.chat.completions.create(model="qwen-vl-max", messages=USER, max_tokens=2)


def test_config_file_overrides_a_policy(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    config = (
        f'[[models]]\nname = "tiny"\npath = "{tiny_qwen3_gguf}"\nparallel = 1\ncontext_length = 512\nthreads = 1\n'
        'aliases = ["qwen-plus"]\n[alias_policy."qwen-plus"]\nthinking_default = true\n'
        "[alias_policy.house]\nthinking_default = false\n"
    )
    with running_server(tmp_path_factory.mktemp("alias-config"), config=config) as srv:
        data = {m["id"]: m for m in httpx.get(f"{srv.base_url}/models", timeout=30).json()["data"]}
        plus = openai.OpenAI(base_url=srv.base_url, api_key="sk", max_retries=0, timeout=60)
        reasoning, _, _, _ = stream_answer(plus, model="qwen-plus", messages=USER, max_tokens=2, extra_body=BIASED)
    assert data["qwen-plus"]["policy"]["thinking_default"] is True
    assert data["qwen-plus"]["policy"]["stream_only_thinking"] is False  # the built-in row's, kept
    assert data["house"]["root"] == "tiny" and data["house"]["capabilities"]["thinking_default"] is False
    assert reasoning == "<think>" * 4
