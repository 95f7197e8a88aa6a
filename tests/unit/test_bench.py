"""The load generator's statistics, request plan and SSE reading (no server; HTTP through a mock transport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from qwenhost.ops.bench import (
    DROPPED,
    BenchConfig,
    Planned,
    RequestResult,
    percentiles,
    plan_requests,
    request_body,
    run_bench,
    run_one,
    summarize,
)


def test_percentiles_interpolate_linearly_like_numpy() -> None:
    p = percentiles([float(x) for x in range(10, 0, -1)])  # 1..10, unsorted on purpose
    assert p["mean"] == pytest.approx(5.5)
    assert p["p50"] == pytest.approx(5.5)
    assert p["p90"] == pytest.approx(9.1)
    assert p["p99"] == pytest.approx(9.91)


def test_percentiles_of_one_and_of_none() -> None:
    assert percentiles([3.0]) == {"mean": 3.0, "p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert percentiles([]) == {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}


def test_tpot_excludes_the_first_token() -> None:
    r = RequestResult(ok=True, output_tokens=11, ttft_s=0.5, latency_s=1.5)
    assert r.tpot_s == pytest.approx(0.1)
    assert RequestResult(ok=True, output_tokens=1, ttft_s=0.5, latency_s=0.5).tpot_s is None
    assert RequestResult(ok=True, stream=False, output_tokens=9, latency_s=2.0).tpot_s is None


def test_summarize_counts_outcomes_and_keeps_non_streaming_out_of_ttft() -> None:
    cfg = BenchConfig(base_url="http://x", model="m", num_requests=5)
    results = [
        RequestResult(
            ok=True, output_tokens=10, prompt_tokens=7, cached_tokens=4, ttft_s=0.1, latency_s=1.0, itl_s=[0.1] * 9
        ),
        RequestResult(ok=True, output_tokens=10, prompt_tokens=7, ttft_s=0.3, latency_s=2.1, itl_s=[0.2] * 9),
        RequestResult(ok=True, stream=False, output_tokens=10, prompt_tokens=7, latency_s=5.0),
        RequestResult(ok=True, output_tokens=3, error=DROPPED),
        RequestResult(ok=False, error="HTTP 500: boom"),
    ]
    report = summarize(cfg, results, elapsed_s=2.0)
    assert (report["completed"], report["dropped"], report["failed"]) == (3, 1, 1)
    assert report["errors"] == {"HTTP 500: boom": 1}
    assert report["output_tokens"] == 33  # what the dropped stream received counts as generated
    assert report["output_tokens_per_s"] == pytest.approx(16.5)
    assert report["requests_per_s"] == pytest.approx(1.5)
    assert (report["prompt_tokens"], report["cached_tokens"]) == (21, 4)
    assert report["ttft_ms"]["mean"] == pytest.approx(200.0)  # the non-streaming 5 s is not a TTFT
    assert report["ttft_ms"]["p50"] == pytest.approx(200.0)
    assert report["itl_ms"]["p50"] == pytest.approx(150.0)
    assert report["tpot_ms"]["mean"] == pytest.approx(150.0)  # (1.0 - 0.1) / 9 and (2.1 - 0.3) / 9
    assert report["latency_ms"]["p50"] == pytest.approx(2100.0)


def test_plan_is_reproducible_and_follows_the_ratios() -> None:
    cfg = BenchConfig(base_url="http://x", model="m", num_requests=400, disconnect_ratio=0.25, non_stream_ratio=0.5)
    plans = plan_requests(cfg)
    assert plans == plan_requests(cfg)
    non_stream = sum(not p.stream for p in plans)
    dropped = sum(p.drop_after_tokens is not None or p.drop_after_s is not None for p in plans)
    assert 150 < non_stream < 250 and 60 < dropped < 140
    assert all((p.drop_after_s is None) if p.stream else (p.drop_after_tokens is None) for p in plans)
    assert all(1 <= p.drop_after_tokens <= 64 for p in plans if p.drop_after_tokens is not None)
    quiet = plan_requests(BenchConfig(base_url="http://x", model="m", num_requests=50))
    assert all(p.stream and p.drop_after_tokens is None and p.drop_after_s is None for p in quiet)


def test_request_body_sends_only_what_was_asked_and_merges_extra_body() -> None:
    plan = Planned(3, "hi", True, None, None)
    body = request_body(BenchConfig(base_url="http://x", model="m", seed=10), plan)
    assert body["seed"] == 13 and body["ignore_eos"] is True and body["stream_options"] == {"include_usage": True}
    assert "top_p" not in body and "top_k" not in body
    cfg = BenchConfig(
        base_url="http://x",
        model="m",
        top_p=0.8,
        top_k=20,
        ignore_eos=False,
        extra_body={"min_p": 0.0, "temperature": 0.0},
    )
    body = request_body(cfg, Planned(0, "hi", False, None, None))
    assert (body["top_p"], body["top_k"], body["min_p"], body["temperature"]) == (0.8, 20, 0.0, 0.0)
    assert "ignore_eos" not in body and "stream_options" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    body = request_body(BenchConfig(base_url="http://x", model="m", system_prompt="S"), plan)
    assert body["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]


def _sse(*chunks: dict[str, object]) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def _delta(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def _run(handler: Callable[[httpx.Request], httpx.Response], plan: Planned) -> RequestResult:
    async def go() -> RequestResult:
        cfg = BenchConfig(base_url="http://bench.test/v1", model="m")
        async with httpx.AsyncClient(base_url=cfg.base_url, transport=httpx.MockTransport(handler)) as client:
            return await run_one(client, cfg, plan)

    return asyncio.run(go())


def test_stream_reads_usage_and_times_content_chunks() -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 8}}
    body = _sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        _delta("a"),
        _delta("b"),
        _delta("c"),
        {"choices": [], "usage": usage},
    )
    r = _run(lambda req: httpx.Response(200, content=body), Planned(0, "p", True, None, None))
    assert r.ok and not r.error
    assert (r.output_tokens, r.prompt_tokens, r.cached_tokens) == (3, 9, 8)
    assert len(r.itl_s) == 2 and r.ttft_s > 0 and r.latency_s >= r.ttft_s


def test_stream_without_usage_counts_chunks_and_a_planned_drop_is_not_an_error() -> None:
    body = _sse(*[_delta(ch) for ch in "abcdef"])
    r = _run(lambda req: httpx.Response(200, content=body), Planned(0, "p", True, None, None))
    assert r.ok and r.output_tokens == 6
    r = _run(lambda req: httpx.Response(200, content=body), Planned(0, "p", True, 2, None))
    assert r.ok and r.is_dropped and r.output_tokens == 2


def test_server_errors_are_failures() -> None:
    err = _sse(_delta("a"), {"error": {"code": "internal_error", "message": "x"}})
    r = _run(lambda req: httpx.Response(200, content=err), Planned(0, "p", True, None, None))
    assert not r.ok and r.error.startswith("in-stream error")
    r = _run(
        lambda req: httpx.Response(429, json={"error": {"code": "Throttling"}}), Planned(0, "p", False, None, None)
    )
    assert not r.ok and r.error.startswith("HTTP 429")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    r = _run(refuse, Planned(0, "p", True, None, None))
    assert not r.ok and "ConnectError" in r.error


def test_run_bench_respects_concurrency() -> None:
    active = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        usage = {"prompt_tokens": 5, "completion_tokens": 4}
        return httpx.Response(200, content=_sse(*[_delta("x")] * 4, {"choices": [], "usage": usage}))

    cfg = BenchConfig(base_url="http://bench.test/v1", model="m", num_requests=12, concurrency=3, warmup=1)
    report = asyncio.run(run_bench(cfg, httpx.MockTransport(handler)))
    assert report["completed"] == 12 and report["output_tokens"] == 48
    assert peak == 3
