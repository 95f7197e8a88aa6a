"""The no-Ray recipe (docs/scale-out.md): ``sglang-router --policy cache_aware`` in front of two real
``qwenhost serve`` processes. Repeats of a system prompt find their prefix cached, streams and auth pass
through, and the router makes no outbound connection (a proxy trap counts any attempt).

Measured, not asserted: how many workers the router used. sglang-router 0.3.2 sent every sequential chat
request to one worker here (docs/scale-out.md says when it spreads them). Slow:
``QWENHOST_SCALEOUT_TESTS=1 PYTHONPATH=$PWD python3 -m pytest tests/e2e/test_sglang_router.py -s``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import RunningServer, free_port, running_server, stop, wait_healthy

pytest.importorskip("sglang_router")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    # Opt-in: about 1 minutes on the 2-core machine, too long for the default suite.
    pytest.mark.skipif(
        os.environ.get("QWENHOST_SCALEOUT_TESTS") != "1", reason="set QWENHOST_SCALEOUT_TESTS=1 to run (slow)"
    ),
]

KEY = "sk-recipe"
# 8 slots in a shared KV cache keep each worker's prompts cached while every repeat takes a slot of its own.
WORKER_ARGS = ["--threads", "1", "--parallel", "8", "--kv-layout", "unified", "--context-length", "4096"]
WORKER_ARGS += ["--api-key", KEY]
WORDS = "amber basalt cedar dune ember fjord glacier heron iris juniper kelp lagoon".split()


class ProxyTrap:
    """A listening socket set as HTTP(S)_PROXY: any outbound request the router tries connects here."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()


@contextlib.contextmanager
def router(tmp_path: Path, workers: list[RunningServer], trap: ProxyTrap) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--worker-urls", *(w.root for w in workers), "--policy", "cache_aware"]
    env = {
        "PATH": "/usr/bin:/bin",
        "HTTP_PROXY": trap.url,
        "HTTPS_PROXY": trap.url,
        "ALL_PROXY": trap.url,
        "NO_PROXY": "127.0.0.1,localhost",  # the workers are reached directly
        "HF_HUB_OFFLINE": "1",
    }
    log_path = tmp_path / "router.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, f"{url}/health", log_path, 60)
        yield url
    finally:
        stop(process)
        print(f"\nrouter log: {log_path}")


def _prompt(i: int) -> str:
    rng = random.Random(100 + i)
    return f"Handbook {i}. Answer from it.\n" + " ".join(rng.choice(WORDS) for _ in range(900))


def _ask(url: str, prompt: int, question: int, key: str = KEY) -> httpx.Response:
    body = {
        "model": "qwen-plus",
        "messages": [{"role": "system", "content": _prompt(prompt)}, {"role": "user", "content": f"Q{question}?"}],
        "max_tokens": 2,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def test_cache_aware_routing_in_front_of_two_qwenhost_processes(tmp_path: Path) -> None:
    trap = ProxyTrap()
    with (
        running_server(tmp_path, WORKER_ARGS) as a,
        running_server(tmp_path, WORKER_ARGS) as b,
        router(tmp_path, [a, b], trap) as url,
    ):
        order = [0, 1, 2, 3, 2, 0, 3, 1, 1, 3, 0, 2]
        holder: dict[int, str] = {}
        hits, repeats, replicas = 0, 0, set()
        for question, prompt in enumerate(order):
            r = _ask(url, prompt, question)
            assert r.status_code == 200, r.text
            replica = r.headers["x-qwenhost-replica"]
            replicas.add(replica)
            usage = r.json()["usage"]
            if prompt in holder:
                repeats += 1
                cached = usage["prompt_tokens_details"]["cached_tokens"]
                hits += replica == holder[prompt] and cached >= 0.9 * usage["prompt_tokens"]
            holder.setdefault(prompt, replica)
        refused = _ask(url, 0, 99, key="wrong")
        body = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        ) as s:
            frames = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
        log = (tmp_path / "router.log").read_text(errors="replace")
    print(
        f"\nsglang-router cache_aware: {hits}/{repeats} repeats on the replica holding their prefix "
        f"(cached ≥ 90 %), {len(replicas)} of 2 workers used; outbound connection attempts: {trap.connections}"
    )
    assert hits == repeats == len(order) - 4
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert frames[-1] == "[DONE]" and json.loads(frames[0])["choices"][0]["delta"]["role"] == "assistant"
    assert trap.connections == 0 and "huggingface.co" not in log
