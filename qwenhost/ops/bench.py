"""``qwenhost bench``: N streaming requests at concurrency C against any OpenAI-compatible URL.

Reports output tokens/s, requests/s, time to first token and inter-token latency percentiles, like
``vllm bench serve``. Works against qwenhost and peers (llama-server, vLLM, Ollama) alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

WORDS = (
    "river mountain signal copper lantern orchard window harbor meadow engine garden violet thunder paper "
    "island marble rocket candle forest silver bridge canvas falcon winter amber cloud pepper"
).split()


@dataclass
class RequestResult:
    ok: bool
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float = 0.0
    latency_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class BenchConfig:
    base_url: str
    model: str
    api_key: str = "sk-bench"
    num_requests: int = 32
    concurrency: int = 8
    max_tokens: int = 128
    prompt_words: int = 32
    shared_prefix_words: int = 0
    ignore_eos: bool = True
    temperature: float = 0.7
    seed: int = 0
    timeout_s: float = 600.0
    disconnect_ratio: float = 0.0  # soak: drop this share of streams early
    non_stream_ratio: float = 0.0  # soak: send this share without streaming


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"mean": statistics.fmean(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


def make_prompts(cfg: BenchConfig) -> list[str]:
    rng = random.Random(cfg.seed)
    prefix = " ".join(rng.choice(WORDS) for _ in range(cfg.shared_prefix_words))
    prompts = []
    for i in range(cfg.num_requests):
        body = " ".join(rng.choice(WORDS) for _ in range(cfg.prompt_words))
        prompts.append(f"{prefix}\n\nRequest {i}: write a long story that uses these words: {body}".strip())
    return prompts


async def _one(client: httpx.AsyncClient, cfg: BenchConfig, prompt: str, rng: random.Random) -> RequestResult:
    stream = rng.random() >= cfg.non_stream_ratio
    drop_after = rng.randint(1, max(1, cfg.max_tokens // 2)) if rng.random() < cfg.disconnect_ratio else None
    body: dict[str, Any] = {
        "model": cfg.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    start = time.perf_counter()
    result = RequestResult(ok=False)
    try:
        if not stream:
            response = await client.post("/chat/completions", json=body)
            result.latency_s = result.ttft_s = time.perf_counter() - start
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return result
            _read_usage(result, response.json().get("usage"))
            result.ok = True
            return result
        async with client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            last = start
            chunks = 0
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = json.dumps(chunk["error"])[:200]
                    return result
                if chunk.get("usage"):
                    _read_usage(result, chunk["usage"])
                for choice in chunk.get("choices", []):
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content"):
                        now = time.perf_counter()
                        if chunks == 0:
                            result.ttft_s = now - start
                        else:
                            result.itl_s.append(now - last)
                        last = now
                        chunks += 1
                if drop_after is not None and chunks >= drop_after:
                    result.ok = True  # a deliberate disconnect is not an error
                    result.error = "dropped"
                    return result
            if not result.output_tokens:
                result.output_tokens = chunks
        result.latency_s = time.perf_counter() - start
        result.ok = True
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = repr(exc)
    return result


def _read_usage(result: RequestResult, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    result.output_tokens = usage.get("completion_tokens", 0)
    result.prompt_tokens = usage.get("prompt_tokens", 0)
    details = usage.get("prompt_tokens_details") or {}
    result.cached_tokens = details.get("cached_tokens") or 0


async def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    prompts = make_prompts(cfg)
    rng = random.Random(cfg.seed + 1)
    semaphore = asyncio.Semaphore(cfg.concurrency)
    headers = {"Authorization": f"Bearer {cfg.api_key}"}
    limits = httpx.Limits(max_connections=cfg.concurrency + 4, max_keepalive_connections=cfg.concurrency + 4)
    async with httpx.AsyncClient(
        base_url=cfg.base_url, headers=headers, timeout=cfg.timeout_s, limits=limits
    ) as client:

        async def guarded(prompt: str) -> RequestResult:
            async with semaphore:
                return await _one(client, cfg, prompt, rng)

        started = time.perf_counter()
        results = await asyncio.gather(*(guarded(p) for p in prompts))
        elapsed = time.perf_counter() - started
    return summarize(cfg, results, elapsed)


def summarize(cfg: BenchConfig, results: list[RequestResult], elapsed_s: float) -> dict[str, Any]:
    done = [r for r in results if r.ok and r.error != "dropped"]
    output = sum(r.output_tokens for r in results if r.ok)
    itl = [x for r in done for x in r.itl_s]
    return {
        "config": asdict(cfg),
        "completed": len(done),
        "dropped": sum(1 for r in results if r.error == "dropped"),
        "failed": sum(1 for r in results if not r.ok),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "duration_s": elapsed_s,
        "requests_per_s": len(done) / elapsed_s if elapsed_s else 0.0,
        "output_tokens": output,
        "output_tokens_per_s": output / elapsed_s if elapsed_s else 0.0,
        "prompt_tokens": sum(r.prompt_tokens for r in done),
        "cached_tokens": sum(r.cached_tokens for r in done),
        "ttft_ms": {k: v * 1000 for k, v in _percentiles([r.ttft_s for r in done]).items()},
        "itl_ms": {k: v * 1000 for k, v in _percentiles(itl).items()},
        "latency_ms": {k: v * 1000 for k, v in _percentiles([r.latency_s for r in done]).items()},
    }


def format_report(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"target            {cfg['base_url']}  model={cfg['model']}",
        f"requests          {report['completed']} ok, {report['failed']} failed, {report['dropped']} dropped "
        f"(concurrency {cfg['concurrency']}, max_tokens {cfg['max_tokens']})",
        f"duration          {report['duration_s']:.2f} s",
        f"requests/s        {report['requests_per_s']:.3f}",
        f"output tokens/s   {report['output_tokens_per_s']:.1f}  ({report['output_tokens']} tokens)",
        f"prompt tokens     {report['prompt_tokens']} (cached {report['cached_tokens']})",
    ]
    for name in ("ttft_ms", "itl_ms", "latency_ms"):
        p = report[name]
        lines.append(f"{name:<17} mean {p['mean']:.1f}  p50 {p['p50']:.1f}  p90 {p['p90']:.1f}  p99 {p['p99']:.1f}")
    for error in report["errors"]:
        lines.append(f"error             {error}")
    return "\n".join(lines)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000/compatible-mode/v1")
    p.add_argument("--model", default="qwen-plus")
    p.add_argument("--api-key", default="sk-bench")
    p.add_argument("-n", "--num-requests", type=int, default=32)
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--prompt-words", type=int, default=32, help="random words per prompt")
    p.add_argument("--shared-prefix-words", type=int, default=0, help="a common prefix for every prompt")
    p.add_argument("--no-ignore-eos", action="store_true", help="let answers stop early (default: ignore_eos)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--disconnect-ratio", type=float, default=0.0, help="share of streams dropped early (soak)")
    p.add_argument("--non-stream-ratio", type=float, default=0.0, help="share of non-streaming requests")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_bench_cli(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        num_requests=args.num_requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_words=args.prompt_words,
        shared_prefix_words=args.shared_prefix_words,
        ignore_eos=not args.no_ignore_eos,
        temperature=args.temperature,
        seed=args.seed,
        disconnect_ratio=args.disconnect_ratio,
        non_stream_ratio=args.non_stream_ratio,
    )
    report = asyncio.run(run_bench(cfg))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["failed"] == 0 else 1
