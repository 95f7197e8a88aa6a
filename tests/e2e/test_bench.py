"""``qwenhost bench`` against the real server: exact token counts, disconnects that free their slots."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhost.ops.bench import BenchConfig, run_bench
from tests.support.server import REPO, RunningServer, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _wait_idle(server: RunningServer, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while server.gauge("running_sequences") or server.gauge("in_flight_requests"):
        assert time.monotonic() < deadline, "sequences still running after the bench ended"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ("--parallel", "2", "--context-length", "1024")
    with running_server(tmp_path_factory.mktemp("bench"), args) as srv:
        yield srv


def test_bench_generates_exactly_max_tokens_per_request(bench_server: RunningServer) -> None:
    cfg = BenchConfig(base_url=bench_server.base_url, model="qwen-plus", num_requests=4, concurrency=2, max_tokens=12)
    report = asyncio.run(run_bench(cfg))
    assert report["failed"] == 0, report["errors"]
    assert report["completed"] == 4
    assert report["output_tokens"] == 4 * 12  # ignore_eos: no answer stops early
    assert report["prompt_tokens"] > 4 * 20
    assert 0 < report["ttft_ms"]["p50"] <= report["latency_ms"]["p50"]
    assert report["itl_ms"]["mean"] > 0 and report["output_tokens_per_s"] > 0
    _wait_idle(bench_server)


def test_bench_soak_mix_with_disconnects_leaves_no_error_and_no_running_sequence(bench_server: RunningServer) -> None:
    cfg = BenchConfig(
        base_url=bench_server.base_url,
        model="qwen-plus",
        num_requests=12,
        concurrency=4,  # more than --parallel: some requests wait in the queue
        max_tokens=24,
        disconnect_ratio=0.4,
        non_stream_ratio=0.4,
        seed=3,
    )
    report = asyncio.run(run_bench(cfg))
    assert report["failed"] == 0, report["errors"]
    assert report["dropped"] >= 1 and report["completed"] + report["dropped"] == 12
    _wait_idle(bench_server)
    # The server is whole afterwards: a new request is answered in full.
    again = asyncio.run(run_bench(BenchConfig(bench_server.base_url, "qwen-plus", num_requests=1, max_tokens=5)))
    assert again["completed"] == 1 and again["output_tokens"] == 5


def test_bench_cli_prints_and_writes_json(bench_server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "qwenhost", "bench", "--base-url", bench_server.base_url, "-n", "2", "-c", "2"]
    cmd += ["--max-tokens", "6", "--top-p", "0.8", "--top-k", "20", "--extra-body", '{"repetition_penalty": 1.0}']
    proc = subprocess.run([*cmd, "--json", "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text("utf-8"))
    assert printed["output_tokens"] == 12 and printed["config"]["extra_body"] == {"repetition_penalty": 1.0}
    text = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "output tokens/s" in text.stdout
