"""Stop strings are matched twice: on bytes by the engine (it ends the choice when one completes) and on
text by the service (service/output.py cuts the answer before it). On the real model, both must put the
end in the same place: the choice ends on the token that completes the stop string — counted in
completion_tokens, no token later or earlier — and the answer is exactly the text before the stop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.server import running_server

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Describe a morning at a café in Zürich, in three sentences."}]
GREEDY: dict[str, Any] = {"model": "qwen-plus", "messages": MESSAGES, "max_tokens": 48, "temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    # A server of its own: no other traffic changes its batches, so greedy decoding repeats itself.
    with running_server(tmp_path_factory.mktemp("stops"), ("--parallel", "1", "--context-length", "1024")) as srv:
        yield openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=120)


def token_bytes(client: openai.OpenAI) -> list[bytes]:
    reference = client.chat.completions.create(**GREEDY, logprobs=True)
    logprobs = reference.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    return [bytes(entry.bytes or b"") for entry in logprobs.content]


def candidates(pieces: list[bytes]) -> Iterator[str]:
    """Stop strings inside one token, across a token boundary, and around the first multi-byte character."""
    text = b"".join(pieces).decode("utf-8", errors="replace")
    middle = len(pieces) // 2
    head = b"".join(pieces[:middle]).decode("utf-8", errors="ignore")
    boundary = len(head)
    yield text[boundary - 2 : boundary + 2]  # straddles the token boundary at ``middle``
    longest = max(range(len(pieces)), key=lambda i: len(pieces[i].strip()))
    inside = pieces[longest].decode("utf-8", errors="ignore").strip()
    if len(inside) >= 3:
        yield inside[1:-1]
    wide = next((i for i, ch in enumerate(text) if ord(ch) > 127 and ch != "\ufffd"), None)
    if wide is not None:
        yield text[max(0, wide - 1) : wide + 1]


def expected(pieces: list[bytes], stop: str) -> tuple[str, int]:
    """The text before the stop, and how many tokens the engine samples before one completes it."""
    target = stop.encode()
    seen = b""
    for i, piece in enumerate(pieces):
        seen += piece
        if target in seen:
            text = seen.decode("utf-8", errors="replace")
            return text[: text.find(stop)], i + 1
    raise AssertionError(f"{stop!r} is not in the reference output")


def test_engine_and_service_end_a_stopped_choice_at_the_same_token(client: openai.OpenAI) -> None:
    pieces = token_bytes(client)
    assert len(pieces) >= 8, pieces
    tried = 0
    for stop in candidates(pieces):
        if not stop.strip():
            continue
        content, num_tokens = expected(pieces, stop)
        for stream in (False, True):
            if stream:
                chunks = client.chat.completions.create(**GREEDY, stop=[stop], stream=True)
                parts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
                got, reason = "".join(parts), "stop"
            else:
                answer = client.chat.completions.create(**GREEDY, stop=[stop])
                got, reason = answer.choices[0].message.content or "", answer.choices[0].finish_reason
                assert answer.usage is not None and answer.usage.completion_tokens == num_tokens, stop
            assert (got, reason) == (content, "stop"), stop
        tried += 1
    assert tried >= 2
