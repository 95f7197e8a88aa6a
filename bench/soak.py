"""Soak: 500 mixed streaming/non-streaming requests with random disconnects; errors and RSS over time.

    /work/venv/bin/python -m bench.soak [--peer --llama-bin DIR]

The requests go in batches of 100 at concurrency 12 (more than the 8 parallel sequences, so the
waiting queue is used), 30% without streaming, 20% abandoned by the client part-way, answers of
natural length up to 128 tokens, half of them behind a shared prefix (the prefix cache is used
and evicted). A thread samples the server's RSS every 0.5 s; after each batch the RSS at rest is
recorded too. Errors the client did not cause: failed requests in the bench, 5xx in /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Any

import httpx

from bench import harness as h
from qwenhost.ops.bench import run_bench

BATCH = 100


def _metrics(server: h.Server) -> dict[str, float]:
    """qwenhost's request counters by status and its engine gauges (llama-server: nothing)."""
    out: dict[str, float] = {}
    if server.name != "qwenhost":
        return out
    text = httpx.get(server.base_url.split("/compatible-mode")[0] + "/metrics", timeout=10).text
    for line in text.splitlines():
        if m := re.match(r'qwenhost_requests_total\{model="[^"]*",status="(\d+)"\} (\S+)', line):
            out[f"status_{m[1]}"] = out.get(f"status_{m[1]}", 0.0) + float(m[2])
        elif m := re.match(r"qwenhost_engine_(\w+)\{[^}]*\} (\S+)", line):
            out[m[1]] = float(m[2])
    return out


def soak(server: h.Server, args: argparse.Namespace) -> dict[str, Any]:
    batches = []
    rest_rss = [server.rss_mib()]
    with h.RssSampler(server.pid) as sampler:
        for b in range(args.requests // BATCH):
            cfg = h.bench_config(
                server,
                num_requests=BATCH,
                concurrency=args.concurrency,
                max_tokens=128,
                ignore_eos=False,
                disconnect_ratio=0.2,
                non_stream_ratio=0.3,
                shared_prefix_words=300 if b % 2 else 0,
                seed=1000 + b,
                warmup=0,
            )
            window = h.CpuWindow([server.pid])
            report = asyncio.run(run_bench(cfg))
            report["cpu"] = window.close()
            time.sleep(1.0)  # let aborted sequences be freed before reading the RSS at rest
            rest_rss.append(server.rss_mib())
            del report["config"]
            batches.append(report)
            print(
                f"{server.name:<12} batch {b}: {report['completed']} ok, {report['dropped']} dropped, "
                f"{report['failed']} failed, {report['output_tokens_per_s']:.0f} tok/s, RSS {rest_rss[-1]:.1f} MiB",
                flush=True,
            )
    metrics = _metrics(server)
    server_errors = sum(v for k, v in metrics.items() if k.startswith("status_5"))
    return {
        "server": server.name,
        "batches": batches,
        "rss_at_rest_mib": rest_rss,
        "rss_samples": sampler.samples,
        "metrics": metrics,
        "completed": sum(r["completed"] for r in batches),
        "dropped": sum(r["dropped"] for r in batches),
        "failed": sum(r["failed"] for r in batches),
        "errors": [e for r in batches for e in r["errors"]],
        "server_5xx": server_errors,
        "rss_growth_after_warmup_mib": rest_rss[-1] - rest_rss[1],
        "rss_peak_mib": max(v for _, v in sampler.samples),
        "log_tracebacks": server.log_path.read_text("utf-8", errors="replace").count("Traceback"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    h.quiet_from(args).wait()
    results: dict[str, Any] = {"machine": h.machine(), "args": vars(args), "runs": []}
    logs = h.log_dir()
    with h.qwenhost_server(logs, h.PARALLEL, h.CONTEXT_PER_SLOT, h.THREADS, args.qwenhost_arg) as ours:
        results["commands"] = [ours.process.args]
        results["runs"].append(soak(ours, args))
    if args.peer:
        binary = h.find_binary(args.llama_bin, "llama-server")
        with h.llama_server(binary, logs, h.PARALLEL, h.CONTEXT_PER_SLOT, h.THREADS, args.peer_arg) as peer:
            results["commands"].append(peer.process.args)
            results["runs"].append(soak(peer, args))
    return results


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for r in results["runs"]:
        rest = " → ".join(f"{v:.0f}" for v in r["rss_at_rest_mib"])
        rows.append(
            [
                r["server"],
                r["completed"],
                r["dropped"],
                r["failed"],
                r["server_5xx"] if r["server"] == "qwenhost" else "n/a",
                r["log_tracebacks"],
                rest,
                f"{r['rss_growth_after_warmup_mib']:+.1f}",
                r["rss_peak_mib"],
            ]
        )
    header = [
        "server", "completed", "dropped by client", "failed", "5xx", "tracebacks in log",
        "RSS at rest per 100 requests (MiB)", "growth after 1st 100 (MiB)", "peak RSS (MiB)",
    ]  # fmt: skip
    head = h.heading(results)
    errors = {e for r in results["runs"] for e in r["errors"]}
    tail = "\n\nerrors: " + "; ".join(sorted(errors)) if errors else ""
    return f"{head}\n\n{h.table(header, rows)}{tail}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.common_args(p)
    p.add_argument("--requests", type=int, default=500, help="total requests, in batches of 100")
    p.add_argument("--concurrency", type=int, default=12)
    p.add_argument("--peer", action="store_true", help="soak llama-server the same way afterwards")
    args = p.parse_args()
    results = run(args)
    h.write_results(h.output_path(args.output, "soak"), results, markdown(results))


if __name__ == "__main__":
    main()
