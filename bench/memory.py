"""Resident memory of qwenhost and llama-server at qwenhost's default settings: after start-up, after one chat
request, after a workload of distinct prompts, and the peak during that workload.

    python -m bench.memory --llama-bin /path/to/llama.cpp/build/bin

qwenhost starts with none of --parallel, --context-length, --threads: its defaults (parallel 4, context
min(the model's training context, 8192) per sequence, threads = all cores). llama-server gets
the same context per sequence and parallelism (``-np 4 -c 4×context --jinja``), the same threads and the
same weight repacking (harness.repack_args). ``--parallel``/``--context`` override both sides.

RSS is VmRSS of the whole process (/proc/PID/status). Any process qwenhost has started (a speech worker, a
code sandbox …) gets a row of its own; the peak is sampled every 0.25 s on the two main processes.

What can grow: llama-server keeps a host-RAM prompt cache (``--cache-ram``, 8192 MiB by default) that
takes the KV state of prompts its slots give up, so its RSS grows with the number of distinct prompts
until that bound. qwenhost's prefix cache lives in the KV memory sized at start-up (parallel sequences of
context tokens each in the default split layout), its explicit-cache entries in host memory bounded by
max_cached_tokens (docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from bench import harness as h
from bench.threads import stat_fields

POINTS = ("started", "one_chat", "workload")
CACHE_RAM_NOTE = (
    "llama-server keeps a host-RAM prompt cache (--cache-ram, default 8192 MiB) that grows with distinct "
    "prompts; qwenhost's prefix cache lives in the KV memory sized at start-up, and its explicit-cache "
    "entries (cache_control) take host memory only while they exist, at most max_cached_tokens cells."
)


def defaults() -> tuple[int, int, int]:
    """qwenhost's own defaults for the embedded model: (parallel, context per sequence, threads)."""
    import llama_cpp

    from qwenhost.config import ModelConfig
    from qwenhost.engine.llamacpp.runner import DEFAULT_CONTEXT

    metadata = llama_cpp.Llama(h.embedded_model_path(), vocab_only=True, verbose=False).metadata
    trained = int(metadata[f"{metadata['general.architecture']}.context_length"])
    mc = ModelConfig(name="default")
    return mc.parallel, min(trained, DEFAULT_CONTEXT), mc.threads or os.cpu_count() or 1  # as main.engine_config


def descendants(pid: int) -> dict[str, float]:
    """RSS (MiB) of every process below ``pid``, keyed by '<program and arguments> (pid N)'."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            ppid = int(stat_fields(proc / "stat")[1])
            children.setdefault(ppid, []).append(int(proc.name))
    found: dict[str, float] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        todo += children.get(child, [])
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace").split("\0")
            found[f"{' '.join([Path(argv[0]).name, *argv[1:]]).strip()[:80]} (pid {child})"] = h.rss_mib(child)
    return found


def snapshot(server: h.Server) -> dict[str, Any]:
    return {"rss_mib": server.rss_mib(), "descendants": descendants(server.pid)}


def measure_server(server: h.Server, args: argparse.Namespace) -> dict[str, Any]:
    points = {"started": snapshot(server)}
    h.measure(server, h.bench_config(server, num_requests=1, concurrency=1, max_tokens=16, warmup=0))
    points["one_chat"] = snapshot(server)
    cfg = h.bench_config(
        server, num_requests=args.requests, concurrency=1, max_tokens=16, prompt_words=args.prompt_words, warmup=0
    )
    with h.RssSampler(server.pid, period_s=0.25) as sampler:
        report = h.measure(server, cfg)
    points["workload"] = snapshot(server)
    done = max(1, report["completed"])
    return {
        "points": points,
        "peak_mib": max(mib for _, mib in sampler.samples),
        "workload": {
            "completed": report["completed"],
            "failed": report["failed"],
            "prompt_tokens_per_request": report["prompt_tokens"] / done,
            "cached_tokens": report["cached_tokens"],
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    binary = h.find_binary(args.llama_bin, "llama-server")
    parallel, context, threads = defaults()
    parallel, context = args.parallel or parallel, args.context or context
    overrides = ["--parallel", str(args.parallel)] if args.parallel else []
    overrides += ["--context-length", str(args.context)] if args.context else []
    port = h.free_port()
    cmd = [sys.executable, "-m", "qwenhost", "serve", "--port", str(port), *overrides, *args.qwenhost_arg]
    results: dict[str, Any] = {"machine": h.machine(), "args": vars(args), "servers": {}}
    results["settings"] = {"parallel": parallel, "context_per_sequence": context, "threads": threads}
    logs = h.log_dir()
    with (
        h.serve("qwenhost", cmd, port, "/compatible-mode/v1", logs) as ours,
        h.llama_server(binary, logs, parallel, context, threads) as peer,
    ):
        results["commands"] = [ours.process.args, peer.process.args]
        for server in (ours, peer):
            results["servers"][server.name] = found = measure_server(server, args)
            print(f"{server.name}: {found['points']['workload']['rss_mib']:.0f} MiB after the workload", flush=True)
    return results


def total(server: dict[str, Any], point: str) -> float:
    snap = server["points"][point]
    return float(snap["rss_mib"] + sum(snap["descendants"].values()))


def markdown(results: dict[str, Any]) -> str:
    servers, s, a = results["servers"], results["settings"], results["args"]
    rows: list[list[object]] = []
    for name, server in servers.items():
        rows.append([name, *(server["points"][p]["rss_mib"] for p in POINTS), server["peak_mib"]])
        children = sorted({key for p in POINTS for key in server["points"][p]["descendants"]})
        rows += [
            [f"↳ {key}", *(server["points"][p]["descendants"].get(key, "—") for p in POINTS), "—"] for key in children
        ]
    ours, peer = servers["qwenhost"], servers["llama-server"]
    ratios = [total(ours, p) / total(peer, p) for p in POINTS]
    rows.append(["qwenhost (with its processes) ÷ llama-server", *(f"{r:.2f}×" for r in ratios), "—"])
    per_prompt = ours["workload"]["prompt_tokens_per_request"]
    header = ["process (RSS MiB)", "after start-up", "after one chat", f"after {a['requests']} prompts", "peak during"]
    met = "met" if max(ratios) <= 1 else "NOT met"
    growth = "; ".join(
        f"{name} {total(v, 'workload') - total(v, 'one_chat'):+.0f} MiB "
        f"({(total(v, 'workload') - total(v, 'one_chat')) / a['requests']:+.1f} a prompt)"
        for name, v in servers.items()
    )
    return (
        f"{h.heading(results)}\n\nparallel {s['parallel']}, context {s['context_per_sequence']} per sequence, "
        f"{s['threads']} threads; workload: {a['requests']} distinct prompts of ~{per_prompt:.0f} tokens, 16 output "
        f"tokens each, one at a time.\n\n{h.table(header, rows)}\n\n"
        f"Growth over the workload: {growth}. {CACHE_RAM_NOTE}\n\n"
        f"Target (qwenhost ≤ llama-server at every point): {met}."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama-bin", metavar="DIR", help="folder with llama-server (default $LLAMA_CPP_BIN, PATH)")
    p.add_argument("--output", metavar="FILE", help="JSON results (default .bench/memory-<time>.json)")
    p.add_argument("--parallel", type=int, help="sequences for both servers (default: qwenhost's, 4)")
    p.add_argument("--context", type=int, help="tokens per sequence for both (default: qwenhost's, ≤ 8192)")
    p.add_argument("--requests", type=int, default=40, help="distinct prompts in the workload (default 40)")
    p.add_argument("--prompt-words", type=int, default=256, help="words per prompt (default 256: ~300 tokens)")
    p.add_argument("--qwenhost-arg", action="append", default=[], metavar="ARG", help="extra qwenhost serve argument")
    args = p.parse_args()
    results = run(args)
    h.write_results(h.output_path(args.output, "memory"), results, markdown(results))


if __name__ == "__main__":
    main()
