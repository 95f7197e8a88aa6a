"""A completed request is in the usage ledger even when the server is SIGKILLed right after answering:
the entry is committed before the answer's last bytes (streaming: before the usage frame and [DONE])."""

# ruff: noqa: F811  (the store fixtures are imported; each test takes them by name)

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import httpx
import pytest

from qwenhost.cli import main
from qwenhost.ops.store import ledger
from qwenhost.ops.store.database import StoreSettings, open_engine
from tests.support.server import running_server
from tests.support.stores import pg_cluster, store_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Count to five."}]
NATIVE = "/api/v1/services/aigc/text-generation/generation"


def _complete(root: str, headers: dict[str, str]) -> list[str]:
    """Several requests, each read to its very end; their request ids."""
    ids = []
    with httpx.Client(base_url=root, headers=headers, timeout=120) as http:
        for i in range(3):
            body = {"model": "qwen-plus", "messages": MESSAGES, "max_tokens": 8 + i}
            answer = http.post("/compatible-mode/v1/chat/completions", json=body)
            assert answer.status_code == 200
            ids.append(answer.headers["x-request-id"])
        for usage in (True, False):
            body = {"model": "qwen-turbo", "messages": MESSAGES, "max_tokens": 8, "stream": True}
            body["stream_options"] = {"include_usage": usage}
            with http.stream("POST", "/compatible-mode/v1/chat/completions", json=body) as stream:
                lines = [line for line in stream.iter_lines() if line]
                ids.append(stream.headers["x-request-id"])
            assert lines[-1] == "data: [DONE]"
        sse = {"X-DashScope-SSE": "enable"}
        native = {"model": "qwen-max", "input": {"messages": MESSAGES}, "parameters": {"max_tokens": 8}}
        with http.stream("POST", NATIVE, json=native, headers=sse) as stream:
            frames = [line for line in stream.iter_lines() if line.startswith("data:")]
            ids.append(stream.headers["x-request-id"])
        assert json.loads(frames[-1].removeprefix("data:"))["output"]["finish_reason"] in ("stop", "length")
        missing = http.post("/compatible-mode/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
        assert missing.status_code == 404
        ids.append(missing.headers["x-request-id"])
    return ids


def test_sigkill_right_after_completion_loses_nothing(store_url: str, tmp_path: Path) -> None:
    config = f'[store]\nurl = "{store_url}"\n'
    with running_server(tmp_path, ("--context-length", "2048", "--api-key", "sk-team"), config=config) as server:
        ids = _complete(server.root, {"Authorization": "Bearer sk-team"})
        server.process.send_signal(signal.SIGKILL)  # at once: no drain, no shutdown hook
        assert server.process.wait(timeout=30) == -signal.SIGKILL
    engine = open_engine(StoreSettings(store_url))
    entries = {e.request_id: e for e in ledger.entries(engine)}
    engine.dispose()
    assert set(ids) <= set(entries), f"missing from the ledger: {set(ids) - set(entries)}"
    done = [entries[i] for i in ids[:-1]]
    assert all(e.status == 200 and e.prompt_tokens > 0 and e.completion_tokens > 0 for e in done)
    assert [e.stream for e in done] == [False, False, False, True, True, True]
    assert [e.alias for e in done] == ["qwen-plus"] * 3 + ["qwen-turbo"] * 2 + ["qwen-max"]
    assert {e.key_name for e in done} == {"key-" + hashlib.sha256(b"sk-team").hexdigest()[:8]}  # the env key's id
    assert entries[ids[-1]].status == 404  # errors are recorded too
    # A restart on the same store reads the same ledger.
    with running_server(tmp_path, ("--context-length", "2048", "--api-key", "sk-team"), config=config):
        assert main(["usage", "--db", store_url]) == 0
