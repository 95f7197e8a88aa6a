"""llama-batched-bench's pure decode at batch 8 against qwenhost's aggregate output tokens/s at concurrency 8.

    /work/venv/bin/python -m bench.batched --llama-bin /path/to/llama.cpp/build/bin

llama-batched-bench decodes 8 sequences of 128 tokens after a 64-token prompt, in C++, with no
sampling, no HTTP and no detokenization: the ceiling for any server on this machine. It runs with
its default split KV cache, with flash attention at llama.cpp's default (auto: on for the CPU) and
off (``-fa off``, qwenhost's CPU default), taking turns with ``qwenhost bench -c 8`` (128 tokens
each); target: qwenhost ≥ 0.9× of the faster ceiling.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from bench import harness as h

VARIANTS = {"split KV, flash attention auto": [], "split KV, flash attention off (-fa off)": ["-fa", "off"]}


def batched_bench(binary: str, extra: list[str], max_tokens: int, quiet: h.Quiet) -> dict[str, Any]:
    cmd = [
        binary, "-m", h.embedded_model_path(), "-t", str(h.THREADS), "-tb", str(h.THREADS),
        "-c", str(h.PARALLEL * (64 + max_tokens) + 256), "-npp", "64", "-ntg", str(max_tokens),
        "-npl", f"1,{h.PARALLEL}", "--output-format", "jsonl", *h.repack_args(), *extra,
    ]  # fmt: skip
    spoiled: list[float] = []
    while True:
        quiet.wait()
        window = h.CpuWindow(quiet.pids)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate(timeout=600)  # reaped: its CPU time counts in ours (cutime)
        cpu = window.close()
        if proc.returncode != 0:
            raise RuntimeError(f"llama-batched-bench failed: {stderr[-2000:]}")
        if cpu["cpu_other_cores"] < quiet.threshold_cores or len(spoiled) >= quiet.retries:
            break
        spoiled.append(cpu["cpu_other_cores"])
        print(f"  batched-bench: others used {spoiled[-1]:.2f} cores; measuring again", file=sys.stderr)
    rows = [json.loads(line) for line in (stdout + stderr).splitlines() if line.startswith("{")]
    return {"command": cmd, "rows": rows, "cpu": cpu, "spoiled_attempts_other_cores": spoiled}


def run(args: argparse.Namespace) -> dict[str, Any]:
    binary = h.find_binary(args.llama_bin, "llama-batched-bench")
    quiet = h.quiet_from(args)
    results: dict[str, Any] = {"machine": h.machine(), "args": vars(args), "runs": []}
    with h.qwenhost_server(h.log_dir(), h.PARALLEL, h.CONTEXT_PER_SLOT, h.THREADS, args.qwenhost_arg) as ours:
        results["commands"] = [ours.process.args]
        quiet.pids = [ours.pid]
        h.measure(ours, h.bench_config(ours, num_requests=8, concurrency=8, max_tokens=32))  # warm-up
        for round_no in range(args.rounds):
            for name, extra in VARIANTS.items():
                out = batched_bench(binary, extra, args.max_tokens, quiet)
                for row in out["rows"]:
                    results["runs"].append({"round": round_no, "who": name, "batch": row["pl"], **row})
                    print(f"round {round_no} batched-bench {name:<40} B={row['pl']} S_TG {row['speed_tg']:.1f} t/s")
                results.setdefault("batched_bench_commands", {})[name] = out["command"]
            cfg = h.bench_config(
                ours, num_requests=args.requests, concurrency=8, max_tokens=args.max_tokens, seed=round_no
            )
            report = h.measure(ours, cfg, quiet)
            tps = report["output_tokens_per_s"]
            results["runs"].append(
                {"round": round_no, "who": "qwenhost", "batch": 8, "speed_tg": tps, "report": report}
            )
            print(f"round {round_no} qwenhost c=8 {tps:.1f} tok/s", flush=True)
    results["summary"] = {
        f"{who} B={batch}": h.median(
            [r["speed_tg"] for r in results["runs"] if r["who"] == who and r["batch"] == batch]
        )
        for who in (*VARIANTS, "qwenhost")
        for batch in (1, 8)
        if any(r["who"] == who and r["batch"] == batch for r in results["runs"])
    }
    return results


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    ours = s["qwenhost B=8"]
    rows = [[key, value, f"{ours / value:.2f}×" if key.endswith("B=8") else ""] for key, value in s.items()]
    target = ours / max(s[f"{name} B=8"] for name in VARIANTS)
    head = h.heading(results)
    verdict = (
        f"qwenhost c=8 / batched-bench B=8: {target:.2f}× (target ≥ 0.90× {'met' if target >= 0.9 else 'NOT met'})"
    )
    return f"{head}\n\n{h.table(['decode', 'tokens/s', 'qwenhost c=8 / this'], rows)}\n\n{verdict}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.common_args(p)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--requests", type=int, default=24, help="qwenhost requests per measurement")
    args = p.parse_args()
    results = run(args)
    h.write_results(h.output_path(args.output, "batched"), results, markdown(results))


if __name__ == "__main__":
    main()
