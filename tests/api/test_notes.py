"""Nothing is ignored unseen: ignored fields and headers, and parameters read differently, are named in
response headers (api/notes.py); DashScope's refusal of asynchronous calls in both dialects."""

from __future__ import annotations

import pytest

from qwenhost.api.notes import ADJUSTED_HEADER, IGNORED_HEADER, MAX_NAMES, note_headers
from qwenhost.engine.fake import FakeBackend
from tests.api.test_contract import URL, USER, make_client

NATIVE_URL = "/api/v1/services/aigc/text-generation/generation"


def test_ignored_fields_and_inert_headers_are_named() -> None:
    client = make_client()
    body = {"model": "qwen-plus", "messages": USER, "user": "u1", "store": True, "stream_options": {"x": 1}}
    headers = {"X-DashScope-DataInspection": '{"input":"cip"}', "X-DashScope-SSE": "enable"}
    answer = client.post(URL, json=body, headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert answer.headers[IGNORED_HEADER] == (
        "store, user, stream_options.x, X-DashScope-DataInspection, X-DashScope-SSE"
    )
    plain = client.post(URL, json={"model": "qwen-plus", "messages": USER})
    assert IGNORED_HEADER not in plain.headers and ADJUSTED_HEADER not in plain.headers


def test_streamed_answers_carry_the_headers_too() -> None:
    client = make_client()
    body = {"model": "qwen-plus", "messages": USER, "stream": True, "metadata": {}}
    with client.stream("POST", URL, json=body) as answer:
        assert answer.status_code == 200 and answer.headers[IGNORED_HEADER] == "metadata"


def test_a_limit_the_context_cannot_hold_is_lowered_and_said() -> None:
    client = make_client(FakeBackend(context_length=64))
    answer = client.post(URL, json={"model": "qwen-plus", "messages": USER, "max_tokens": 60})
    assert answer.status_code == 200
    assert answer.headers[ADJUSTED_HEADER].startswith("max_tokens=")
    assert answer.headers[ADJUSTED_HEADER].endswith(": the context left after the prompt")


def test_native_parameters_are_named_too() -> None:
    client = make_client()
    body = {"model": "qwen-plus", "input": {"prompt": "hi"}, "parameters": {"result_format": "message", "foo": 1}}
    answer = client.post(NATIVE_URL, json=body)
    assert answer.status_code == 200 and answer.headers[IGNORED_HEADER] == "foo"


@pytest.mark.parametrize(("url", "native"), [(URL, False), (NATIVE_URL, True)])
def test_async_calls_are_refused_as_dashscope_does(url: str, native: bool) -> None:
    body = {"model": "qwen-plus", "messages": USER, "input": {"prompt": "hi"}}
    answer = make_client().post(url, json=body, headers={"X-DashScope-Async": "enable"})
    assert answer.status_code == 403
    payload = answer.json()
    error = payload if native else payload["error"]
    assert error["code"] == ("AccessDenied" if native else "access_denied")
    assert error["message"] == "Current user api does not support asynchronous calls."


def test_header_values_stay_bounded_and_printable() -> None:
    names = (*(f"f{i}" for i in range(MAX_NAMES + 3)), "bad name\r\n", "é")
    value = note_headers(names, ())[IGNORED_HEADER]
    assert value.endswith("+5 more") and value.isascii() and "\n" not in value
