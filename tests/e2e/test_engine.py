"""The continuous-batching engine seen from outside: concurrency, cancellation, admission, caches."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e

STORY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


def test_concurrent_requests_are_batched(server: RunningServer) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
            calls = [
                client.chat.completions.create(model="qwen-plus", messages=STORY, max_tokens=24, seed=i)
                for i in range(6)
            ]
            results = await asyncio.gather(*calls)
        return [r.choices[0].message.content or "" for r in results]

    texts = asyncio.run(main())
    assert len(texts) == 6 and all(texts)


def test_disconnected_streams_free_their_slots(server: RunningServer, client: openai.OpenAI) -> None:
    streams = []
    for i in range(4):  # every slot of the session server (parallel 4)
        stream = client.chat.completions.create(
            model="qwen-plus", messages=STORY, stream=True, max_tokens=2000, extra_body={"ignore_eos": True}, seed=i
        )
        next(iter(stream))
        streams.append(stream)
    assert server.gauge("running_sequences") == 4
    for stream in streams:
        stream.close()
    deadline = time.monotonic() + 10
    while server.gauge("running_sequences") > 0:
        assert time.monotonic() < deadline, "sequences still running after their clients left"
        time.sleep(0.05)
    started = time.monotonic()
    r = client.chat.completions.create(model="qwen-plus", messages=STORY, max_tokens=4)
    assert r.choices[0].message.content is not None
    assert time.monotonic() - started < 20


def test_abandoned_non_streaming_request_is_cancelled(server: RunningServer) -> None:
    body = {"model": "qwen-plus", "messages": STORY, "max_tokens": 3000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=1.5)
    deadline = time.monotonic() + 10
    while server.gauge("running_sequences") > 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_shared_prefix_is_reused(client: openai.OpenAI) -> None:
    system = "You are a meticulous assistant. " + " ".join(f"Rule {i}: be kind and precise." for i in range(60))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}]
    first = client.chat.completions.create(model="qwen-plus", messages=messages, max_tokens=2)
    messages[1]["content"] = "Say bye."
    second = client.chat.completions.create(model="qwen-plus", messages=messages, max_tokens=2)
    assert first.usage is not None and second.usage is not None
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert cached is not None and cached >= first.usage.prompt_tokens - 10


def test_explicit_cache_creation_then_hit(client: openai.OpenAI) -> None:
    doc = " ".join(f"Fact {i}: the number {i} is written as {i}." for i in range(150))
    system = [{"type": "text", "text": doc, "cache_control": {"type": "ephemeral"}}]

    def ask(question: str) -> dict:  # type: ignore[type-arg]
        r = client.chat.completions.create(
            model="qwen-plus",
            max_tokens=2,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        )  # type: ignore[list-item]
        return r.model_dump()["usage"]

    first = ask("What is fact 3?")
    details = first["prompt_tokens_details"]
    assert details["cache_type"] == "ephemeral"
    assert details["cache_creation_input_tokens"] >= 1024
    assert details["cache_creation"]["ephemeral_5m_input_tokens"] == details["cache_creation_input_tokens"]
    second = ask("What is fact 4?")
    hit = second["prompt_tokens_details"]
    assert hit["cache_type"] == "ephemeral" and hit["cache_creation_input_tokens"] == 0
    assert hit["cached_tokens"] == details["cache_creation_input_tokens"]


@pytest.mark.parametrize("layout", ["split", "unified"])
def test_explicit_cache_entry_restores_the_same_cells(tmp_path: Path, layout: str) -> None:
    """An entry lives in host memory after its slot is reused for other prompts; a hit copies its cells
    back, and the greedy answer is the one the first, fully computed request gave."""
    doc = " ".join(f"Fact {i}: the number {i} is written as {i}." for i in range(150))
    cached_system = [{"type": "text", "text": doc, "cache_control": {"type": "ephemeral"}}]
    args = ("--parallel", "2", "--context-length", "4096", "--kv-layout", layout)
    with running_server(tmp_path, args) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)

        def ask(system: object, question: str) -> tuple[str, dict]:  # type: ignore[type-arg]
            r = client.chat.completions.create(
                model="qwen-plus",
                max_tokens=12,
                temperature=0,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],  # type: ignore[misc, list-item]
            )
            return r.choices[0].message.content or "", r.model_dump()["usage"]

        first, usage = ask(cached_system, "What is fact 3?")
        created = usage["prompt_tokens_details"]["cache_creation_input_tokens"]
        assert created >= 1024
        assert srv.gauge("pinned_prefixes") == 1
        assert srv.gauge("pinned_prefix_bytes") > created * 10_000  # ~22 KiB a cell for this model
        for i in range(2):  # both slots now hold other prompts: the entry's cells are only in its snapshot
            ask(f"You are assistant number {i}.", "Hi")
        again, hit = ask(cached_system, "What is fact 3?")
        assert hit["prompt_tokens_details"]["cached_tokens"] == created
        assert again == first


def test_admission_limits(tmp_path: Path) -> None:
    config = """
[[models]]
name = "tiny"
path = "embedded"
aliases = ["qwen-plus"]
parallel = 1
context_length = 2048
max_waiting = 1
queue_timeout_s = 1.5
"""
    with running_server(tmp_path, config=config) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        busy = client.chat.completions.create(
            model="qwen-plus", messages=STORY, stream=True, max_tokens=1500, extra_body={"ignore_eos": True}
        )
        next(iter(busy))

        async def waiting_then_overflow() -> tuple[object, object]:
            async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as aclient:
                queued = asyncio.ensure_future(
                    aclient.chat.completions.create(model="qwen-plus", messages=STORY, max_tokens=2)
                )
                await asyncio.sleep(0.3)
                try:
                    await aclient.chat.completions.create(model="qwen-plus", messages=STORY, max_tokens=2)
                    overflow: object = None
                except openai.RateLimitError as exc:
                    overflow = exc
                try:
                    await queued
                    timed_out: object = None
                except openai.APIStatusError as exc:
                    timed_out = exc
                return overflow, timed_out

        overflow, timed_out = asyncio.run(waiting_then_overflow())
        busy.close()
        assert isinstance(overflow, openai.RateLimitError)
        assert overflow.body["code"] == "Throttling.Concurrency"  # type: ignore[index]
        assert isinstance(timed_out, openai.APIStatusError) and timed_out.status_code == 503
        assert "system capacity limits" in str(timed_out)


def test_request_timeout_returns_what_was_generated(tmp_path: Path) -> None:
    config = """
[server]
request_timeout_s = 4.0
"""
    with running_server(tmp_path, ("--context-length", "4096", "--parallel", "1"), config=config) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        started = time.monotonic()
        r = client.chat.completions.create(
            model="qwen-plus", messages=STORY, max_tokens=4000, extra_body={"ignore_eos": True}
        )
        elapsed = time.monotonic() - started
        # 4,000 tokens take far longer than 4 s here: the answer is what was generated until the timeout.
        assert elapsed < 30
        assert r.choices[0].finish_reason == "length"
        assert r.usage is not None and r.usage.completion_tokens < 4000
        assert bool(r.choices[0].message.content) == (r.usage.completion_tokens > 0)


def test_metrics_and_access_log(server: RunningServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="qwen-plus", messages=STORY, max_tokens=2)
    text = httpx.get(f"{server.root}/metrics", timeout=10).text
    for name in (
        "qwenhost_requests_total",
        "qwenhost_prompt_tokens_total",
        "qwenhost_completion_tokens_total",
        "qwenhost_time_to_first_token_seconds",
        "qwenhost_inter_token_latency_seconds",
        "qwenhost_engine_waiting_requests",
        "qwenhost_engine_running_sequences",
        "qwenhost_cached_prompt_tokens_total",
        "qwenhost_engine_kv_cells_capacity",
    ):
        assert name in text, name
    assert server.gauge("busy_seconds") > 0  # the steps of that request took some time
    assert '"request_id"' in server.log() and '"finish_reason"' in server.log()


def test_cache_isolation_between_keys(tmp_path: Path) -> None:
    config = """
[server]
api_keys = ["sk-alice", "sk-bob"]
cache_isolation = true
"""
    system = "You are a careful assistant. " + " ".join(f"Policy {i} applies." for i in range(40))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hello"}]
    with running_server(tmp_path, ("--context-length", "2048", "--parallel", "2"), config=config) as srv:

        def cached(key: str) -> int:
            client = openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)
            r = client.chat.completions.create(model="qwen-plus", messages=messages, max_tokens=1)  # type: ignore[arg-type]
            assert r.usage is not None and r.usage.prompt_tokens_details is not None
            return r.usage.prompt_tokens_details.cached_tokens or 0

        assert cached("sk-alice") == 0
        assert cached("sk-bob") == 0  # Alice's prefix is not reused for Bob
        assert cached("sk-alice") > 50


def test_kv_pressure_preempts_and_recomputes(tmp_path: Path) -> None:
    config = """
[[models]]
name = "tight"
path = "embedded"
aliases = ["qwen-plus"]
parallel = 3
context_length = 512
kv_cache_tokens = 512
"""
    with running_server(tmp_path, config=config) as srv:

        async def main() -> list[int]:
            async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as client:
                # Different prompts: identical ones would share their prefill cells and the need
                # would depend on whether the three were admitted in the same step.
                calls = [
                    client.chat.completions.create(
                        model="qwen-plus",
                        messages=[{"role": "system", "content": f"Story teller number {i}."}, *STORY],
                        max_tokens=200,
                        seed=i,
                        extra_body={"ignore_eos": True},
                    )
                    for i in range(3)
                ]
                results = await asyncio.gather(*calls)
            return [r.usage.completion_tokens for r in results]  # type: ignore[union-attr]

        # Three answers of 200 tokens after ~40-token prompts need ~720 cells; the cache has 512
        # (llama.cpp rounds n_ctx up to a multiple of 256, so the capacity is set to one exactly).
        assert srv.gauge("kv_cells_capacity") == 512
        assert asyncio.run(main()) == [200, 200, 200]
        assert srv.gauge("preemptions") > 0
