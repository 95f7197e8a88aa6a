"""``kv_layout = "split"``: one KV stream per sequence, as llama-server. Prefixes shared across slots
are whole-stream copies, and tokens shared by ``n`` choices are decoded once per stream; both must
give the same model state as computing from scratch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def split_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp: Path = tmp_path_factory.mktemp("split")
    with running_server(tmp, ("--kv-layout", "split", "--parallel", "3", "--context-length", "1024")) as srv:
        yield srv


def _client(srv: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)


def _first_token_logprobs(client: openai.OpenAI, messages: list[dict[str, str]]) -> tuple[dict[str, float], int]:
    r = client.chat.completions.create(
        model="qwen-plus",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=1,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
    )
    assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content
    top = {t.token: t.logprob for t in r.choices[0].logprobs.content[0].top_logprobs}
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    return top, r.usage.prompt_tokens_details.cached_tokens or 0


def test_prefix_copied_from_another_stream_gives_the_fresh_state(
    split_server: RunningServer, server: RunningServer
) -> None:
    system = f"Reference {uuid.uuid4()}. " + " ".join(f"Rule {i}: answer briefly and politely." for i in range(30))
    split = _client(split_server)
    split.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Say hello."}],
        max_tokens=4,
        temperature=0,
    )
    question = [{"role": "system", "content": system}, {"role": "user", "content": "Name a colour."}]
    reused, cached = _first_token_logprobs(split, question)
    assert cached > 200  # the system prompt came from the first request's stream
    # The same prompt computed from nothing on the session server (unified layout, never seen it).
    fresh, fresh_cached = _first_token_logprobs(_client(server), question)
    assert fresh_cached < 20
    best = max(fresh, key=lambda t: fresh[t])
    assert best in reused, (fresh, reused)
    # Not bitwise: the prefix was computed in another batch shape (other kernel paths), which moves
    # logprobs by up to ~0.1 in either layout; a wrong or missing copy moves them far more.
    assert abs(reused[best] - fresh[best]) < 0.25, (fresh, reused)


def test_n_choices_and_concurrent_sequences(split_server: RunningServer) -> None:
    client = _client(split_server)
    r = client.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "Tell me a story."}],
        n=2,
        max_tokens=16,
        seed=7,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage is not None and r.usage.completion_tokens == 32

    async def main() -> list[int]:
        async with openai.AsyncOpenAI(base_url=split_server.base_url, api_key="x", max_retries=0) as aclient:
            calls = [
                aclient.chat.completions.create(
                    model="qwen-plus",
                    messages=[{"role": "user", "content": f"Story number {i}, please."}],
                    max_tokens=24,
                    seed=i,
                    extra_body={"ignore_eos": True},
                )
                for i in range(5)  # more than the 3 slots: queued, admitted into freed streams
            ]
            return [c.usage.completion_tokens for c in await asyncio.gather(*calls)]  # type: ignore[union-attr]

    assert asyncio.run(main()) == [24] * 5
