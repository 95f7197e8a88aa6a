"""Output tokens/s at concurrency 1 and 8 (128 tokens each): qwenhost and llama-server, interleaved.

    /work/venv/bin/python -m bench.throughput --llama-bin /path/to/llama.cpp/build/bin

Both servers run at once on loopback with the same GGUF, 2 threads, 8 parallel sequences of 4096
tokens each; they take turns (the order alternates every round) so background noise hits both.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import harness as h


def run(args: argparse.Namespace) -> dict[str, Any]:
    with h.side_by_side(args) as (ours, peer, quiet, results):
        for server in (ours, peer):  # load pages, JIT nothing, but fill caches and allocators once
            h.measure(server, h.bench_config(server, num_requests=8, concurrency=8, max_tokens=32))
        for round_no in range(args.rounds):
            order = (ours, peer) if round_no % 2 == 0 else (peer, ours)
            for concurrency, n in ((1, args.requests_c1), (8, args.requests_c8)):
                for server in order:
                    cfg = h.bench_config(
                        server, num_requests=n, concurrency=concurrency, max_tokens=args.max_tokens, seed=round_no
                    )
                    report = h.measure(server, cfg, quiet)
                    report["round"] = round_no
                    results["runs"].append(report)
                    print(
                        f"round {round_no} c={concurrency} {server.name:<12} {report['output_tokens_per_s']:7.1f} tok/s"
                        f"  other CPU {report['cpu']['cpu_other_cores']:.2f} cores  failed {report['failed']}",
                        flush=True,
                    )
    results["summary"] = summarize(results["runs"])
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in (1, 8):
        row: dict[str, Any] = {}
        for name in ("qwenhost", "llama-server"):
            mine = [r for r in runs if r["server"] == name and r["config"]["concurrency"] == concurrency]
            tps = [r["output_tokens_per_s"] for r in mine]
            row[name] = {
                "tokens_per_s": h.median(tps),
                "min": min(tps),
                "max": max(tps),
                "ttft_p50_ms": h.median([r["ttft_ms"]["p50"] for r in mine]),
                "tpot_mean_ms": h.median([r["tpot_ms"]["mean"] for r in mine]),
                "itl_p99_ms": h.median([r["itl_ms"]["p99"] for r in mine]),
                "failed": sum(r["failed"] for r in mine),
                "other_cpu_cores": max(r["cpu"]["cpu_other_cores"] for r in mine),
            }
        row["ratio"] = row["qwenhost"]["tokens_per_s"] / row["llama-server"]["tokens_per_s"]
        out[f"c{concurrency}"] = row
    return out


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    targets = {"c1": 1.0, "c8": 1.15}
    rows = []
    for key, row in s.items():
        q, p = row["qwenhost"], row["llama-server"]
        rows.append(
            [
                key[1:],
                f"{q['tokens_per_s']:.1f} ({q['min']:.1f}–{q['max']:.1f})",
                f"{p['tokens_per_s']:.1f} ({p['min']:.1f}–{p['max']:.1f})",
                f"{row['ratio']:.2f}×",
                f"≥ {targets[key]:.2f}× {'met' if row['ratio'] >= targets[key] else 'NOT met'}",
            ]
        )
    main = h.table(["concurrency", "qwenhost tok/s median (min–max)", "llama-server tok/s", "ratio", "target"], rows)
    detail_rows = [
        [key[1:], name, v["ttft_p50_ms"], v["tpot_mean_ms"], v["itl_p99_ms"], v["failed"], v["other_cpu_cores"]]
        for key, row in s.items()
        for name, v in row.items()
        if name != "ratio"
    ]
    detail = h.table(
        ["c", "server", "TTFT p50 ms", "TPOT mean ms", "ITL p99 ms", "failed", "max other CPU (cores)"], detail_rows
    )
    head = h.heading(results)
    return f"{head}\n\n{main}\n\n{detail}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.common_args(p)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--requests-c1", type=int, default=4, help="requests per concurrency-1 measurement")
    p.add_argument("--requests-c8", type=int, default=24, help="requests per concurrency-8 measurement")
    args = p.parse_args()
    results = run(args)
    h.write_results(h.output_path(args.output, "throughput"), results, markdown(results))


if __name__ == "__main__":
    main()
