"""The constrained-loop guard is a per-model setting (constrained_loop_tokens): the default span, a shorter
one and none, each on the real engine. The answer is forced whole by its schema (a const string of one
character repeated), so what ends it is the guard alone and not the model's choices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e

VALUE = "7" * 300  # legitimate output that is one token repeated: the guard cannot tell it from a loop
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"v": {"type": "string", "const": VALUE}},
    "required": ["v"],
    "additionalProperties": False,
}
MODEL = 'path = "embedded"\nparallel = 1\ncontext_length = 1024\ncache_slots = 1\n'
CONFIG = (
    f'[[models]]\nname = "guard-64"\n{MODEL}constrained_loop_tokens = 64\n'
    f'[[models]]\nname = "guard-off"\n{MODEL}constrained_loop_tokens = 0\n'
)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp: Path = tmp_path_factory.mktemp("loop-guard")
    with running_server(tmp, config=CONFIG) as srv:
        yield srv


def _ask(srv: RunningServer, model: str) -> tuple[str, str, int]:
    client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=300)
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write the JSON object."}],
        temperature=0,
        max_tokens=600,
        response_format={"type": "json_schema", "json_schema": {"name": "sevens", "schema": SCHEMA}},
    )
    assert r.usage is not None
    return r.choices[0].message.content or "", r.choices[0].finish_reason, r.usage.completion_tokens


def test_the_loop_guard_span_is_the_models_setting(server: RunningServer, guarded: RunningServer) -> None:
    text, finish, default_tokens = _ask(server, "qwen-plus")  # the session server: the default, 128 tokens
    assert finish == "length" and f'{{"v": "{VALUE}'.startswith(text) and "7" * 64 in text, text
    text, finish, short_tokens = _ask(guarded, "guard-64")
    assert finish == "length" and f'{{"v": "{VALUE}'.startswith(text), text
    assert default_tokens - short_tokens == 128 - 64  # the same opening, then a span of 7s each
    text, finish, _ = _ask(guarded, "guard-off")
    assert finish == "stop" and json.loads(text) == {"v": VALUE}  # 0: nothing cuts it
