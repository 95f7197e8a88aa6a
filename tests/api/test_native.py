"""Contract tests of the native DashScope protocol (/api/v1) with the FakeBackend: bodies, framing, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from qwenhost.core.errors import ModelUnavailable
from qwenhost.engine.fake import FakeBackend
from qwenhost.engine.protocol import EngineOutput, GenerationRequest, Reservation
from tests.api.test_contract import make_client

TEXT = "/api/v1/services/aigc/text-generation/generation"
MULTIMODAL = "/api/v1/services/aigc/multimodal-generation/generation"
SSE = {"X-DashScope-SSE": "enable"}


def body(**parameters: Any) -> dict[str, Any]:
    return {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "hey"}]}, "parameters": parameters}


def native_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Each frame as (event, data): ``id:N``, ``event:X``, ``:HTTP_STATUS/NNN`` and one ``data:`` line, no spaces."""
    out = []
    for n, block in enumerate([b for b in text.split("\n\n") if b], start=1):
        lines = block.split("\n")
        assert lines[0] == f"id:{n}" and lines[1].startswith("event:") and lines[2].startswith(":HTTP_STATUS/")
        assert len(lines) == 4 and lines[3].startswith("data:")
        out.append((lines[1][6:], json.loads(lines[3][5:])))
    return out


def hi() -> FakeBackend:
    return FakeBackend(script=lambda r, c: "Hi!")


def test_message_format_non_streaming() -> None:
    r = make_client(hi()).post(TEXT, json=body(result_format="message"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["output"] == {
        "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "Hi!"}, "index": 0}]
    }
    usage = data["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] and usage["output_tokens"] > 0
    assert isinstance(data["request_id"], str) and data["request_id"] and "code" not in data


def test_text_format_is_the_default_and_prompt_input_works() -> None:
    client = make_client(hi())
    assert client.post(TEXT, json=body()).json()["output"] == {"text": "Hi!", "finish_reason": "stop"}
    legacy = {"model": "qwen-plus", "input": {"prompt": "hey", "history": [{"user": "a", "bot": "b"}]}}
    assert client.post(TEXT, json=legacy).json()["output"] == {"text": "Hi!", "finish_reason": "stop"}


def test_each_name_brings_its_native_defaults() -> None:
    # [DOC-ZH]: the open-source Qwen3 names answer in message format and incrementally by default,
    # qwen-long in message format; what the request says wins (aliases.py).
    client = make_client(hi())
    for name in ("qwen3-8b", "qwen-long"):
        answer = client.post(TEXT, json={**body(), "model": name}).json()["output"]
        assert answer["choices"][0]["message"]["content"] == "Hi!"
    assert client.post(TEXT, json={**body(result_format="text"), "model": "qwen3-8b"}).json()["output"]["text"]
    streamed = client.post(TEXT, json={**body(), "model": "qwen3-8b"}, headers=SSE)
    contents = [d["output"]["choices"][0]["message"]["content"] for _, d in native_events(streamed.text)]
    assert "".join(contents) == "Hi!" and contents[-1] != "Hi!"  # pieces, not the text so far
    cumulative = client.post(TEXT, json={**body(), "model": "qwen-plus"}, headers=SSE)
    assert native_events(cumulative.text)[-1][1]["output"]["text"] == "Hi!"


def test_stream_incremental_message() -> None:
    r = make_client(hi()).post(TEXT, json=body(result_format="message", incremental_output=True), headers=SSE)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = native_events(r.text)
    assert {e for e, _ in events} == {"result"}
    choices = [d["output"]["choices"][0] for _, d in events]
    assert [c["message"]["content"] for c in choices] == ["H", "i", "!", ""]
    assert [c["finish_reason"] for c in choices] == ["null", "null", "null", "stop"]
    usages = [d["usage"] for _, d in events]
    assert [u["output_tokens"] for u in usages[:-1]] == [1, 2, 3]  # cumulative in every event
    assert len({u["input_tokens"] for u in usages}) == 1 and len({d["request_id"] for _, d in events}) == 1
    assert "[DONE]" not in r.text


def test_stream_cumulative_text() -> None:
    r = make_client(hi()).post(TEXT, json=body(incremental_output=False), headers=SSE)
    outputs = [d["output"] for _, d in native_events(r.text)]
    assert [o["text"] for o in outputs] == ["H", "Hi", "Hi!", "Hi!"]
    assert [o["finish_reason"] for o in outputs] == ["null", "null", "null", "stop"]


def test_multimodal_route_answers_list_content() -> None:
    r = make_client(hi()).post(MULTIMODAL, json=body())
    assert r.json()["output"]["choices"][0]["message"]["content"] == [{"text": "Hi!"}]


def test_native_errors() -> None:
    client = make_client(hi())
    r = client.post(TEXT, json={**body(), "model": "nope"})
    assert r.status_code == 404 and r.json()["code"] == "ModelNotFound" and r.json()["request_id"]
    r = client.post(TEXT, json=body(temperature=5), headers=SSE)  # before the stream: JSON with the status
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert r.json()["code"] == "InvalidParameter" and "Temperature" in r.json()["message"]
    assert client.post(TEXT, json=body(result_format="xml")).json()["code"] == "InvalidParameter"
    assert client.post(TEXT, json={"model": "qwen-plus"}).json()["code"] == "BadRequest.EmptyInput"
    r = client.post(TEXT, json=body(), headers={"X-DashScope-Async": "enable"})
    assert r.status_code == 403
    assert r.json()["message"] == "Current user api does not support asynchronous calls."


def test_native_auth_error() -> None:
    r = make_client(hi(), keys=("sk-good",)).post(TEXT, json=body(), headers={"Authorization": "Bearer sk-bad"})
    assert r.status_code == 401
    assert r.json()["code"] == "InvalidApiKey" and r.json()["message"] == "Invalid API-key provided."


def test_body_limit_and_surrogates_are_the_edge_s() -> None:
    from qwenhost.api.options import EdgeOptions

    client = make_client(hi(), options=EdgeOptions(max_body_bytes=64))
    r = client.post(TEXT, json=body())
    assert r.status_code == 413 and r.json()["code"] == "BadRequest.TooLarge"
    assert set(r.json()) == {"code", "message", "request_id"}
    raw = b'{"model":"qwen-plus","input":{"messages":[{"role":"user","content":"\\ud800"}]}}'
    r = make_client(hi()).post(TEXT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"code", "message", "request_id"}


class _FailsMidStream(FakeBackend):
    """Sends two steps, then the engine fails: the native stream must end with one ``event:error`` frame."""

    async def generate(self, request: GenerationRequest, reservation: Reservation) -> AsyncIterator[EngineOutput]:
        sent = 0
        async for out in super().generate(request, reservation):
            yield out
            sent += 1
            if sent == 3:  # PromptDone and two tokens
                raise ModelUnavailable()


def test_mid_stream_error_is_an_error_event() -> None:
    backend = _FailsMidStream(script=lambda r, c: "Hello")
    r = make_client(backend).post(TEXT, json=body(incremental_output=True, result_format="message"), headers=SSE)
    assert r.status_code == 200
    events = native_events(r.text)
    assert [e for e, _ in events] == ["result", "result", "error"]
    assert "\n:HTTP_STATUS/503\n" in r.text
    error = events[-1][1]
    assert error["code"] == "ServiceUnavailable" and error["message"] and error["request_id"]


def test_accept_event_stream_alone_streams_and_nothing_else_does() -> None:
    client = make_client(hi())
    r = client.post(TEXT, json=body(), headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream") and native_events(r.text)
    r = client.post(TEXT, json=body(stream=True), headers={"Accept": "application/json; charset=utf-8"})
    assert r.headers["content-type"].startswith("application/json")  # the SDK never sends stream in the body
