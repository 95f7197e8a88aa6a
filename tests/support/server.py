"""Start the real qwenhost server in a subprocess for end-to-end tests."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/compatible-mode/v1"

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def prompts(self, request_id: str) -> list[str]:
        """Each prompt the engine received for ``request_id`` (one per tool round), as prepare logs them at
        debug level (``[server] log_level = "debug"``)."""
        found = re.findall(rf"request {re.escape(request_id)} prompt: (.*)$", self.log(), re.M)
        return [str(ast.literal_eval(p)) for p in found]  # the log holds each prompt's repr

    def gauge(self, name: str) -> float:
        """The engine gauge ``qwenhost_engine_<name>`` of the (first) served model, from /metrics."""
        text = httpx.get(f"{self.root}/metrics", timeout=10).text
        match = re.search(rf"^qwenhost_engine_{name}\{{[^}}]*\}} (\S+)$", text, re.M)
        assert match, f"no gauge {name}"
        return float(match.group(1))


@contextlib.contextmanager
def running_server(
    tmp_dir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    config: str | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[RunningServer]:
    """``qwenhost serve`` on a free port, waiting for /health; killed on exit."""
    port = free_port()
    log_path = tmp_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "qwenhost", "serve", "--port", str(port), *args]
    if config is not None:
        cfg = tmp_dir / f"config-{port}.toml"
        cfg.write_text(config, "utf-8")
        cmd += ["--config", str(cfg)]
    # Each server keeps its own store (keys, ledger) unless the test says otherwise: none shares another's.
    data_home = str(tmp_dir / f"data-{port}")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_DATA_HOME": data_home, **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    server = RunningServer(port, process, log_path)
    try:
        wait_healthy(process, f"{server.root}/health", log_path, startup_timeout_s)
        yield server
    finally:
        stop(process)


def wait_healthy(process: subprocess.Popen[bytes], health_url: str, log_path: Path, timeout_s: float) -> None:
    """Until ``health_url`` answers 200; RuntimeError with the process's log if it exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(health_url, timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{health_url} did not answer 200:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
