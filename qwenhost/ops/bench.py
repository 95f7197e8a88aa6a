"""``qwenhost bench``: N streaming requests at concurrency C against any OpenAI-compatible URL.

Reports output tokens/s, requests/s, time to first token, time per output token and inter-token
latency percentiles, like ``vllm bench serve``. Works against qwenhost and peers (llama-server,
vLLM, Ollama) alike: the body is plain OpenAI Chat Completions plus ``ignore_eos`` (which qwenhost,
vLLM and llama-server honour) and whatever ``extra_body`` adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

WORDS = (
    "river mountain signal copper lantern orchard window harbor meadow engine garden violet thunder paper "
    "island marble rocket candle forest silver bridge canvas falcon winter amber cloud pepper"
).split()
DROPPED = "dropped"  # a disconnect the client chose: not an error


@dataclass
class RequestResult:
    ok: bool
    stream: bool = True
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float = 0.0
    latency_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def is_dropped(self) -> bool:
        return self.error == DROPPED

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (vLLM's TPOT); None with fewer than two tokens."""
        if not self.stream or self.output_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)


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
    system_prompt: str = ""  # sent as a system message before every prompt (prefix-cache runs)
    ignore_eos: bool = True
    temperature: float = 0.7
    top_p: float | None = None  # None: the server's default
    top_k: int | None = None
    seed: int = 0
    timeout_s: float = 600.0
    warmup: int = 0  # requests sent (one at a time) and not counted before the timed run
    disconnect_ratio: float = 0.0  # soak: drop this share of requests early
    non_stream_ratio: float = 0.0  # soak: send this share without streaming
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request body


@dataclass(frozen=True)
class Planned:
    """What one request will do, drawn up front so runs are reproducible whatever the interleaving."""

    index: int
    prompt: str
    stream: bool
    drop_after_tokens: int | None  # streaming: disconnect after this many content chunks
    drop_after_s: float | None  # non-streaming: abandon the request after this many seconds


def percentiles(values: list[float]) -> dict[str, float]:
    """Mean and p50/p90/p99 with linear interpolation between ranks (numpy's default, as vLLM reports)."""
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        rank = q * (len(ordered) - 1)
        lo = int(rank)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)

    return {"mean": statistics.fmean(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


def make_prompts(cfg: BenchConfig) -> list[str]:
    rng = random.Random(cfg.seed)
    prefix = " ".join(rng.choice(WORDS) for _ in range(cfg.shared_prefix_words))
    prompts = []
    for i in range(cfg.num_requests):
        body = " ".join(rng.choice(WORDS) for _ in range(cfg.prompt_words))
        prompts.append(f"{prefix}\n\nRequest {i}: write a long story that uses these words: {body}".strip())
    return prompts


def plan_requests(cfg: BenchConfig) -> list[Planned]:
    rng = random.Random(cfg.seed + 1)
    plans = []
    for i, prompt in enumerate(make_prompts(cfg)):
        stream = rng.random() >= cfg.non_stream_ratio
        drop = rng.random() < cfg.disconnect_ratio
        drop_tokens = rng.randint(1, max(1, cfg.max_tokens // 2)) if drop and stream else None
        drop_s = rng.uniform(0.05, 1.0) if drop and not stream else None
        plans.append(Planned(i, prompt, stream, drop_tokens, drop_s))
    return plans


def request_body(cfg: BenchConfig, plan: Planned) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": cfg.model,
        "messages": [{"role": "user", "content": plan.prompt}],
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "seed": cfg.seed + plan.index,
        "stream": plan.stream,
    }
    if cfg.system_prompt:
        body["messages"].insert(0, {"role": "system", "content": cfg.system_prompt})
    if cfg.top_p is not None:
        body["top_p"] = cfg.top_p
    if cfg.top_k is not None:
        body["top_k"] = cfg.top_k
    if plan.stream:
        body["stream_options"] = {"include_usage": True}
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    body.update(cfg.extra_body)
    return body


async def _non_stream(client: httpx.AsyncClient, body: dict[str, Any], plan: Planned, result: RequestResult) -> None:
    start = time.perf_counter()
    try:
        response = await asyncio.wait_for(client.post("/chat/completions", json=body), timeout=plan.drop_after_s)
    except TimeoutError:  # only when drop_after_s is set: the client gave up on purpose
        result.ok, result.error = True, DROPPED
        return
    result.latency_s = time.perf_counter() - start
    if response.status_code != 200:
        result.error = f"HTTP {response.status_code}: {response.text[:200]}"
        return
    _read_usage(result, response.json().get("usage"))
    result.ok = True


async def _stream(client: httpx.AsyncClient, body: dict[str, Any], plan: Planned, result: RequestResult) -> None:
    start = last = time.perf_counter()
    chunks = 0
    async with client.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code != 200:
            result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            return
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                result.error = "in-stream error: " + json.dumps(chunk["error"])[:200]
                return
            if chunk.get("usage"):
                _read_usage(result, chunk["usage"])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content"):
                    now = time.perf_counter()
                    if chunks == 0:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
                    chunks += 1
            if plan.drop_after_tokens is not None and chunks >= plan.drop_after_tokens:
                # Leaving the context manager closes the connection mid-stream: the server sees a disconnect.
                result.ok, result.error, result.output_tokens = True, DROPPED, chunks
                return
    result.latency_s = time.perf_counter() - start
    if not result.output_tokens:  # the server sent no usage: count content chunks instead
        result.output_tokens = chunks
    result.ok = True


async def run_one(client: httpx.AsyncClient, cfg: BenchConfig, plan: Planned) -> RequestResult:
    result = RequestResult(ok=False, stream=plan.stream)
    body = request_body(cfg, plan)
    try:
        if plan.stream:
            await _stream(client, body, plan, result)
        else:
            await _non_stream(client, body, plan, result)
    except Exception as exc:  # any failure is one failed request, never the end of the run
        result.ok, result.error = False, f"{type(exc).__name__}: {exc}"[:200]
    return result


def _read_usage(result: RequestResult, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    result.output_tokens = usage.get("completion_tokens") or 0
    result.prompt_tokens = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    result.cached_tokens = details.get("cached_tokens") or 0


def make_client(cfg: BenchConfig, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=cfg.concurrency + 4, max_keepalive_connections=cfg.concurrency + 4)
    return httpx.AsyncClient(
        base_url=cfg.base_url,
        headers={"Authorization": f"Bearer {cfg.api_key}"},
        timeout=cfg.timeout_s,
        limits=limits,
        transport=transport,
    )


async def run_bench(cfg: BenchConfig, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    plans = plan_requests(cfg)
    semaphore = asyncio.Semaphore(cfg.concurrency)
    async with make_client(cfg, transport) as client:
        for i in range(cfg.warmup):
            await run_one(client, cfg, Planned(cfg.num_requests + i, f"Warm-up {i}: say hello.", True, None, None))

        async def guarded(plan: Planned) -> RequestResult:
            async with semaphore:
                return await run_one(client, cfg, plan)

        started = time.perf_counter()
        results = await asyncio.gather(*(guarded(p) for p in plans))
        elapsed = time.perf_counter() - started
    return summarize(cfg, list(results), elapsed)


def _ms(values: list[float]) -> dict[str, float]:
    return {k: v * 1000 for k, v in percentiles(values).items()}


def summarize(cfg: BenchConfig, results: list[RequestResult], elapsed_s: float) -> dict[str, Any]:
    done = [r for r in results if r.ok and not r.is_dropped]
    streamed = [r for r in done if r.stream]
    failed = [r for r in results if not r.ok]
    output = sum(r.output_tokens for r in results if r.ok)  # dropped streams count what they received
    tpot = [t for r in streamed if (t := r.tpot_s) is not None]
    return {
        "config": asdict(cfg),
        "completed": len(done),
        "dropped": sum(1 for r in results if r.is_dropped),
        "failed": len(failed),
        "errors": dict(Counter(r.error for r in failed).most_common(5)),
        "duration_s": elapsed_s,
        "requests_per_s": len(done) / elapsed_s if elapsed_s else 0.0,
        "output_tokens": output,
        "output_tokens_per_s": output / elapsed_s if elapsed_s else 0.0,
        "prompt_tokens": sum(r.prompt_tokens for r in done),
        "cached_tokens": sum(r.cached_tokens for r in done),
        "ttft_ms": _ms([r.ttft_s for r in streamed]),
        "tpot_ms": _ms(tpot),
        "itl_ms": _ms([x for r in streamed for x in r.itl_s]),
        "latency_ms": _ms([r.latency_s for r in done]),
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
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "latency_ms"):
        p = report[name]
        lines.append(f"{name:<17} mean {p['mean']:.1f}  p50 {p['p50']:.1f}  p90 {p['p90']:.1f}  p99 {p['p99']:.1f}")
    for error, count in report["errors"].items():
        lines.append(f"error             {count}× {error}")
    return "\n".join(lines)


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--extra-body must be a JSON object")
    return value


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000/compatible-mode/v1")
    p.add_argument("--model", default="qwen-plus")
    p.add_argument("--api-key", default="sk-bench")
    p.add_argument("-n", "--num-requests", type=int, default=32)
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--prompt-words", type=int, default=32, help="random words per prompt")
    p.add_argument("--shared-prefix-words", type=int, default=0, help="a common prefix for every prompt")
    p.add_argument("--system-prompt", default="", help="a system message sent before every prompt")
    p.add_argument("--no-ignore-eos", action="store_true", help="let answers stop early (default: ignore_eos)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, help="default: the server's")
    p.add_argument("--top-k", type=int, help="default: the server's")
    p.add_argument("--seed", type=int, default=0, help="prompts, plan and per-request seeds (seed + index)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests sent first (default 1)")
    p.add_argument("--disconnect-ratio", type=float, default=0.0, help="share of requests dropped early (soak)")
    p.add_argument("--non-stream-ratio", type=float, default=0.0, help="share of non-streaming requests")
    p.add_argument(
        "--extra-body", type=_json_object, default={}, metavar="JSON", help="fields merged into every request body"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--output", metavar="FILE", help="also write the JSON report to FILE")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        num_requests=args.num_requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_words=args.prompt_words,
        shared_prefix_words=args.shared_prefix_words,
        system_prompt=args.system_prompt,
        ignore_eos=not args.no_ignore_eos,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        timeout_s=args.timeout,
        warmup=args.warmup,
        disconnect_ratio=args.disconnect_ratio,
        non_stream_ratio=args.non_stream_ratio,
        extra_body=args.extra_body,
    )


def run_bench_cli(args: argparse.Namespace) -> int:
    report = asyncio.run(run_bench(config_from_args(args)))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2), "utf-8")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["failed"] == 0 else 1
