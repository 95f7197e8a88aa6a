"""The real ``dashscope`` SDK on the native routes with the tiny vision and Qwen3 fixtures: images by URL and
data URI through ``MultiModalConversation``, and ``reasoning_content`` from a thinking model."""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_multimodal import png, serve
from tests.e2e.test_thinking_qwen3 import NEVER_CLOSE
from tests.support.server import RunningServer, running_server

dashscope = pytest.importorskip("dashscope")
pytestmark = pytest.mark.e2e

KEY = "sk-local-test"


@contextlib.contextmanager
def native(server: RunningServer) -> Iterator[None]:
    saved = dashscope.base_http_api_url
    dashscope.base_http_api_url = server.root + "/api/v1"
    try:
        yield
    finally:
        dashscope.base_http_api_url = saved


@contextlib.contextmanager
def serving(data: bytes) -> Iterator[str]:
    """A one-file HTTP server on localhost: the URL of ``data`` (a PNG)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/dog.png"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(tmp_path_factory.mktemp("native-vl"), "qwen25vl") as srv:
        yield srv


def test_image_by_data_uri_and_url(vision: RunningServer) -> None:
    uri = png(64, 48)
    with native(vision), serving(base64.b64decode(uri.split(",", 1)[1])) as url:
        for image in (uri, url):
            messages = [{"role": "user", "content": [{"image": image}, {"text": "What is in the picture?"}]}]
            rsp = dashscope.MultiModalConversation.call(
                model="qwen-vl-plus", messages=messages, max_tokens=2, api_key=KEY
            )
            assert rsp.status_code == HTTPStatus.OK, (rsp.code, rsp.message)
            assert isinstance(rsp.output.choices[0].message.content, list)
            assert rsp.usage.image_tokens > 0 and rsp.usage.input_tokens_details["image_tokens"] > 0


@pytest.fixture(scope="module")
def thinker(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = (
        f'[[models]]\nname = "tiny-thinker"\npath = "{tiny_qwen3_gguf}"\nparallel = 1\ncontext_length = 512\n'
        'family = "qwen3-thinking-2507"\n'
    )
    with running_server(tmp_path_factory.mktemp("native-qwen3"), config=config) as srv:
        yield srv


def test_thinking_streams_reasoning_content(thinker: RunningServer) -> None:
    with native(thinker):
        chunks = list(
            dashscope.Generation.call(
                model="tiny-thinker",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                incremental_output=True,
                max_tokens=2,
                thinking_budget=4,
                seed=1,
                logit_bias=NEVER_CLOSE,  # a compatible-mode parameter: the native route reads the same keys
                api_key=KEY,
            )
        )
    assert chunks and all(c.status_code == HTTPStatus.OK for c in chunks), [(c.code, c.message) for c in chunks]
    # No result_format asked: a thinking answer defaults to message format, which carries the reasoning.
    reasoning = "".join(c.output.choices[0].message.get("reasoning_content") or "" for c in chunks)
    assert reasoning
    assert chunks[-1].usage.output_tokens_details["reasoning_tokens"] > 0


@pytest.fixture(scope="module")
def hybrid(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = (
        f'[[models]]\nname = "tiny-qwen3"\npath = "{tiny_qwen3_gguf}"\nparallel = 1\ncontext_length = 1024\n'
        "stream_only_thinking = false\n"
    )
    with running_server(tmp_path_factory.mktemp("native-tools"), config=config) as srv:
        yield srv


TIME_TOOL = [{"type": "function", "function": {"name": "get_current_time", "description": "time", "parameters": {}}}]
CALL_TIME = {"type": "function", "function": {"name": "get_current_time"}}


def test_tools_round_trip(hybrid: RunningServer) -> None:
    common: dict[str, Any] = {
        "model": "tiny-qwen3",
        "tools": TIME_TOOL,
        "tool_choice": CALL_TIME,
        "enable_thinking": False,
        "result_format": "message",
        "max_tokens": 120,  # a byte-level vocabulary: every character of the call is a token
        "seed": 1,
        "api_key": KEY,
    }
    user = [{"role": "user", "content": "What time is it?"}]
    with native(hybrid):
        rsp = dashscope.Generation.call(messages=user, **common)
        assert rsp.status_code == HTTPStatus.OK, (rsp.code, rsp.message)
        choice = rsp.output.choices[0]
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert call["type"] == "function" and call["function"]["name"] == "get_current_time" and call["id"]
        chunks = list(dashscope.Generation.call(messages=user, stream=True, incremental_output=True, **common))
        assert all(c.status_code == HTTPStatus.OK for c in chunks)
        fragments = [t for c in chunks for t in c.output.choices[0].message.get("tool_calls") or []]
        assert fragments and all(f["index"] == 0 for f in fragments)
        assert chunks[-1].output.choices[0].finish_reason == "tool_calls"
        turn = [*user, {"role": "assistant", "content": "", "tool_calls": [call]}]
        turn.append({"role": "tool", "tool_call_id": call["id"], "content": "12:00"})
        answer = dashscope.Generation.call(messages=turn, **{**common, "tool_choice": "none", "max_tokens": 4})
        assert answer.status_code == HTTPStatus.OK, (answer.code, answer.message)
        assert answer.output.choices[0].message.role == "assistant"
