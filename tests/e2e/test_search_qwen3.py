"""enable_search end to end on a tiny random-weight Qwen3 GGUF: a document added with `qwenhost index add`
reaches the prompt the engine received; the model-called path runs the whole tool loop (logit_bias makes
the model start a `search` call, the grammar completes it); streams keep DashScope's shapes; a client that
leaves while the tool runs stops it. The server log at debug level shows each round's prompt."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.tiny_qwen3 import token_id
from tests.support.search_fakes import FakeSearch, fake_search
from tests.support.server import REPO, RunningServer, running_server

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen3"
DOC = "The capybara festival of Zanzibar opens on Tuesday at noon."
QUESTION = [{"role": "user", "content": "When does the capybara festival open?"}]
# The model starts a call at once and its query is "aaa…" up to the schema's maxLength: a random string
# can hold byte sequences that lose the closing quote on the way out (reported), so this one is plain.
START_CALL = {str(token_id("<tool_call>")): 100, str(token_id("a")): 50}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSearch]:
    with fake_search() as f:
        yield f


@pytest.fixture(scope="module")
def server(
    tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory, fake: FakeSearch
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("search")
    (tmp / "festival.md").write_text(f"# Festival\n\n{DOC}\n", "utf-8")
    index = tmp / "index.sqlite3"
    added = subprocess.run(
        [sys.executable, "-m", "qwenhost", "index", "add", str(tmp / "festival.md"), "--index", str(index)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "added" in added.stdout
    config = (
        f'[server]\nlog_level = "debug"\n'
        f'[[models]]\nname = "{MODEL}"\npath = "{tiny_qwen3_gguf}"\nparallel = 2\ncontext_length = 2048\n'
        "threads = 1\nstream_only_thinking = false\n"
        f'[search]\nproviders = ["local", "searxng"]\nindex_path = "{index}"\nsearxng_url = "{fake.url}"\n'
        "max_result_chars = 400\nmax_results = 2\nagent_calls = 1\nmax_rounds = 2\nkeepalive_s = 0.2\ntimeout_s = 30\n"
    )
    with running_server(tmp, config=config) as srv:
        yield srv


def post(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json={"model": MODEL, **body}, timeout=120)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_forced_search_puts_the_document_in_the_prompt(server: RunningServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 4, "seed": 1, "enable_thinking": False}
    plain = post(server, body)
    searched = post(server, {**body, "enable_search": True, "search_options": {"forced_search": True}})
    assert plain.status_code == searched.status_code == 200, searched.text
    (prompt,) = server.prompts(searched.headers["x-request-id"])
    assert DOC in prompt
    # The results sit right before the last user message, after the history (the prefix cache keeps hitting).
    assert prompt.index(DOC) < prompt.rindex("<|im_start|>user\n" + QUESTION[0]["content"])
    grown = searched.json()["usage"]["prompt_tokens"] - plain.json()["usage"]["prompt_tokens"]
    assert grown > len(DOC) // 4  # byte-level vocabulary: far more, whatever the merges
    assert "search_info" not in searched.json()  # compatible mode returns no sources (spec §4.8)


def test_native_protocol_returns_search_info_when_asked(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "input": {"messages": QUESTION},
        "parameters": {
            "max_tokens": 4,
            "enable_thinking": False,
            "enable_search": True,
            "search_options": {"forced_search": True, "enable_source": True},
        },
    }
    r = httpx.post(f"{server.root}/api/v1/services/aigc/text-generation/generation", json=body, timeout=120)
    assert r.status_code == 200, r.text
    results = r.json()["output"]["search_info"]["search_results"]
    assert results[0]["title"] == "Festival" and results[0]["index"] == 1 and results[0]["url"].startswith("file://")
    assert r.json()["usage"]["plugins"]["search"] == {"count": 1, "strategy": "turbo"}


def stream_raw(server: RunningServer, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json={"model": MODEL, **body}, timeout=120) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
        request_id = r.headers["x-request-id"]
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    return text, frames, request_id


def test_model_called_search_runs_the_loop_in_one_stream(server: RunningServer, fake: FakeSearch) -> None:
    fake.delay_s, asked = 0.7, len(fake.requests)  # the tool takes a while: keep-alive comments are written
    body = {
        "messages": [{"role": "user", "content": "zzqx"}],  # no local hit: the chain falls over to SearXNG
        "enable_search": True,
        "logit_bias": START_CALL,  # the model starts a call; the grammar makes it a valid search call
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 3,
        "max_tokens": 200,
    }
    try:
        text, frames, request_id = stream_raw(server, body)
    finally:
        fake.delay_s = 0.0
    assert len(fake.requests) == asked + 1 and fake.requests[-1]["path"] == "/search"
    assert ": keep-alive\n\n" in text and text.rstrip().endswith("data: [DONE]")
    rounds = server.prompts(request_id)
    assert len(rounds) == 2 and "Fake result from SearXNG" in rounds[1] and "Fake result" not in rounds[0]
    assert '"name": "search"' in rounds[0]  # offered in the first round; the last round offers no tool
    assert rounds[1].startswith("<|im_start|>user\nzzqx") and "<tool_call>" in rounds[1]
    # One continuous DashScope stream: one id, one role chunk, no sign of the server's call, one finish.
    assert len({f["id"] for f in frames}) == 1
    deltas = [f["choices"][0]["delta"] for f in frames if f["choices"]]
    assert deltas[0] == {"content": None, "role": "assistant", "reasoning_content": ""}
    assert sum("role" in d for d in deltas) == 1
    assert not any(d.get("tool_calls") for d in deltas)
    finishes = [f["choices"][0]["finish_reason"] for f in frames if f["choices"] and f["choices"][0]["finish_reason"]]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    assert frames[-1]["choices"] == [] and all(f["usage"] is None for f in frames[:-1])
    usage = frames[-1]["usage"]
    plain = post(server, {"messages": body["messages"], "max_tokens": 1, "enable_thinking": False})
    assert usage["prompt_tokens"] > 2 * plain.json()["usage"]["prompt_tokens"]  # both rounds' prompts are input
    assert usage["completion_tokens"] > 0


def test_a_client_that_leaves_while_the_tool_runs_stops_it(server: RunningServer, fake: FakeSearch) -> None:
    fake.delay_s, asked = 30.0, len(fake.requests)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "zzqx"}],
        "enable_search": True,
        "logit_bias": START_CALL,
        "stream": True,
        "seed": 3,
        "max_tokens": 200,
    }
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        head = (
            f"POST /compatible-mode/v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data)
        wait_for(lambda: len(fake.requests) > asked, 60, "the search to start")
        received = sock.recv(65536)
        match = re.search(rb"x-request-id: (\S+)", received)
        assert match
        request_id = match.group(1).decode()
    finally:
        sock.close()
        started = time.monotonic()
    wait_for(lambda: any(request_id in line and "499" in line for line in server.log().splitlines()), 20, "a 499")
    assert time.monotonic() - started < 20  # long before the 30 s search would have answered
    fake.delay_s = 0.0
    wait_for(lambda: server.gauge("in_flight_requests") == 0, 30, "the slot to be free")
    assert len(server.prompts(request_id)) == 1  # no second round was prepared


def test_streamed_and_whole_answers_agree_across_rounds(server: RunningServer, fake: FakeSearch) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "zzqx"}],
        "enable_search": True,
        "logit_bias": START_CALL,
        "seed": 5,
        "max_tokens": 200,
    }
    asked = len(fake.requests)
    whole = post(server, body)
    assert whole.status_code == 200, whole.text
    _, frames, _ = stream_raw(server, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert len(fake.requests) == asked + 2  # each answer ran its search
    message = whole.json()["choices"][0]["message"]
    deltas = [f["choices"][0]["delta"] for f in frames if f["choices"]]
    assert "tool_calls" not in message
    assert message["content"] == "".join(d.get("content") or "" for d in deltas)
    assert message["reasoning_content"] == "".join(d.get("reasoning_content") or "" for d in deltas)
    for key in ("prompt_tokens", "completion_tokens"):
        assert whole.json()["usage"][key] == frames[-1]["usage"][key]
