"""enable_code_interpreter end to end on a tiny random-weight Qwen3 GGUF: the model calls the reserved
tool (logit_bias starts the call; the test seam [code_interpreter] test_pinned_code makes the grammar allow
one program), the real sandbox computes 123**21, its output is the next round's input, and the client sees
one continuous streamed thinking answer. The refusals of spec §4.9's rules come first."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.tiny_qwen3 import token_id
from tests.support.server import RunningServer, running_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed: apt-get install bubblewrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's uid pool needs root"),
]

MODEL = "tiny-qwen3"
PROGRAM = "print(123**21)"
START_CALL = {str(token_id("<tool_call>")): 100}


@pytest.fixture(scope="module")
def server(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("code")
    config = (
        f'[server]\nlog_level = "debug"\ntest_faults = true\n'
        f'[[models]]\nname = "{MODEL}"\npath = "{tiny_qwen3_gguf}"\nparallel = 2\ncontext_length = 2048\n'
        "threads = 1\n"
        "[search]\nmax_rounds = 2\nkeepalive_s = 0.2\n"  # the tool loop's bounds (shared by every server tool)
        f'[code_interpreter]\nmax_calls = 1\npython = "/usr/bin/python3"\ntest_pinned_code = "{PROGRAM}"\n'
    )
    with running_server(tmp, config=config) as srv:
        yield srv


def ask(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "What is 123**21?"}], **body}
    return httpx.post(f"{server.base_url}/chat/completions", json=payload, timeout=120)


def test_the_sandbox_computes_and_the_answer_streams_on(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is 123**21?"}],
        "enable_code_interpreter": True,
        "logit_bias": START_CALL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 5,
        "max_tokens": 120,
    }
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=180) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
        request_id = r.headers["x-request-id"]
    rounds = server.prompts(request_id)
    assert len(rounds) == 2
    assert '"name": "code_interpreter"' in rounds[0]  # offered to the model in the first round
    assert str(123**21) in rounds[1] and str(123**21) not in rounds[0]  # the sandbox's output is input now
    assert PROGRAM in rounds[1]  # the call the model made, then its result
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    deltas = [f["choices"][0]["delta"] for f in frames if f["choices"]]
    assert deltas[0] == {"content": None, "role": "assistant", "reasoning_content": ""}  # a thinking answer
    assert sum("role" in d for d in deltas) == 1 and not any(d.get("tool_calls") for d in deltas)
    assert str(123**21) not in text  # compatible mode never shows the code's output (spec §4.9)
    assert frames[-1]["choices"] == [] and frames[-1]["usage"]["prompt_tokens"] > len(rounds[0]) // 8


def test_the_native_protocol_shows_the_code_it_ran(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "input": {"messages": [{"role": "user", "content": "What is 123**21?"}]},
        "parameters": {
            "enable_code_interpreter": True,
            "logit_bias": START_CALL,
            "result_format": "message",
            "incremental_output": True,
            "seed": 5,
            "max_tokens": 120,
        },
    }
    url = f"{server.root}/api/v1/services/aigc/text-generation/generation"
    text = httpx.post(url, json=body, headers={"X-DashScope-SSE": "enable"}, timeout=180).text
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    last = events[-1]
    assert last["output"]["tool_info"] == [{"type": "code_interpreter", "code_interpreter": {"code": PROGRAM}}]
    assert last["usage"]["plugins"]["code_interpreter"] == {"count": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"stream": False}, "enable_code_interpreter requires stream to be true"),
        ({"stream": True, "enable_thinking": False}, "enable_code_interpreter requires enable_thinking to be true"),
    ],
)
def test_the_rules_of_spec_4_9_come_first(server: RunningServer, body: dict[str, Any], message: str) -> None:
    answer = ask(server, {"enable_code_interpreter": True, **body})
    assert answer.status_code == 400
    text = answer.text[6:] if answer.text.startswith("data: ") else answer.text
    assert message in json.loads(text)["error"]["message"]
