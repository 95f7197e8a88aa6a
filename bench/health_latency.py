"""GET /health latency while the server streams: is the event loop ever blocked?

    python -m bench.health_latency                      # starts qwenhost (parallel 8) on the embedded model
    python -m bench.health_latency --url http://127.0.0.1:8000 --concurrency 8 --duration 30

``--concurrency`` clients stream chat completions back to back (from a process of their own, so their
parsing does not delay the probe) while this process sends ``GET /health`` every ``--interval-ms``
and records each answer's latency. Every request carries a different prompt (no whole-prompt cache
hit); with ``--mix structured`` every other request asks for a JSON schema or tools, so rendering,
tokenization and grammar work run during the measurement too; with ``--mix heavy`` every request
carries a fresh 600-property JSON schema (about 70 ms of grammar compile each).
Target (issue 10): p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import harness as h

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "notes": {"type": "string"}},
    "required": ["city", "days"],
}
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city", "parameters": SCHEMA},
}


def big_schema(i: int, num_properties: int = 600) -> dict[str, Any]:
    """A 64 KB extraction schema named for request ``i`` (never a grammar-cache hit): ~70 ms to compile."""
    props: dict[str, Any] = {}
    for k in range(num_properties):
        name = f"field_{i}_{k}"
        if k % 3 == 0:
            props[name] = {"type": "string", "enum": [f"v{i}_{k}_{e}" for e in range(8)]}
        elif k % 3 == 1:
            items = {"type": "array", "items": {"type": "string"}}
            props[name] = {"type": "object", "properties": {"a": {"type": "integer"}, "b": items}, "required": ["a"]}
        else:
            props[name] = {"type": "number"}
    return {"type": "object", "properties": props, "required": list(props)[: num_properties // 2]}


def body(i: int, mix: str, max_tokens: int) -> dict[str, Any]:
    prompt = f"Request {i}: write a few sentences about the city number {i * 7919 % 1000}."
    out: dict[str, Any] = {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": max_tokens,
        "enable_thinking": False,
    }
    if mix == "structured" and i % 2:
        if i % 4 == 1:
            out["response_format"] = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA}}
        else:
            out["tools"] = [TOOL]
    elif mix == "heavy":
        schema = big_schema(i)
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "extract", "schema": schema}}
    return out


async def _client(base_url: str, worker: int, args: dict[str, Any], stop_at: float, counts: list[int]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        i = worker
        while time.monotonic() < stop_at:
            request = body(i, args["mix"], args["max_tokens"])
            async with client.stream("POST", "/chat/completions", json=request) as response:
                if response.status_code != 200:
                    counts[2] += 1
                    await response.aread()
                    if counts[2] == 1:
                        print(f"an error answer: {response.status_code} {response.text[:300]}", file=sys.stderr)
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        counts[0] += 1
            counts[1] += 1
            i += args["concurrency"]


def _load(base_url: str, args: dict[str, Any], stop_at: float, out: Any) -> None:
    """The streaming clients, in a process of their own; reports (chunks, finished requests) at the end."""
    counts = [0, 0, 0]  # chunks, finished requests, error answers

    async def main() -> None:
        clients = asyncio.gather(*(_client(base_url, w, args, stop_at, counts) for w in range(args["concurrency"])))
        with contextlib.suppress(TimeoutError):  # requests still running at the end are dropped
            await asyncio.wait_for(clients, max(0.0, stop_at - time.monotonic()) + 1.0)

    asyncio.run(main())
    out.put(counts)


def sample(health_url: str, stop_at: float, interval_s: float) -> list[float]:
    latencies = []
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            response = client.get(health_url)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"/health answered {response.status_code}: {response.text}")
            time.sleep(max(0.0, interval_s - (time.perf_counter() - started)))
    return latencies


def measure(base_url: str, health_url: str, args: argparse.Namespace) -> dict[str, Any]:
    options = {"mix": args.mix, "max_tokens": args.max_tokens, "concurrency": args.concurrency}
    idle = sample(health_url, time.monotonic() + 2, args.interval_ms / 1000)
    results: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
    warmup_s = 2.0  # the streams ramp up before the probe counts
    stop_at = time.monotonic() + warmup_s + args.duration
    load = multiprocessing.Process(target=_load, args=(base_url, options, stop_at, results))
    load.start()
    time.sleep(warmup_s)
    loaded = sample(health_url, stop_at, args.interval_ms / 1000)
    chunks, requests, errors = results.get(timeout=60)
    load.join()
    return {
        "idle": summary(idle),
        "under_load": summary(loaded),
        "chunks": chunks,
        "requests": requests,
        "errors": errors,
    }


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "samples": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.health_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server's root (default: start qwenhost on the embedded model)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load while /health is sampled")
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--mix", choices=("text", "structured", "heavy"), default="structured")
    parser.add_argument("--qwenhost-arg", action="append", default=[], help="extra `qwenhost serve` argument")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.url:
        root = args.url.rstrip("/")
        result = measure(f"{root}/compatible-mode/v1", f"{root}/health", args)
    else:
        extra = args.qwenhost_arg
        with h.qwenhost_server(h.log_dir(), args.concurrency, h.CONTEXT_PER_SLOT, h.THREADS, extra) as server:
            result = measure(server.base_url, server.health_url, args)
    result = {"machine": h.machine(), "args": vars(args) | {"json": str(args.json)}, **result}
    loaded = result["under_load"]
    print(
        f"GET /health under {args.concurrency} streams ({args.mix}, {result['requests']} requests, "
        f"{result['errors']} error answers, "
        f"{result['chunks']} chunks in {args.duration:.0f} s): p50 {loaded['p50_ms']} ms, "
        f"p99 {loaded['p99_ms']} ms, max {loaded['max_ms']} ms over {loaded['samples']} samples "
        f"(idle p99 {result['idle']['p99_ms']} ms)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
