"""Contract tests: the ASGI app with a scripted FakeBackend, checked against DashScope's wire shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from qwenhost.api.app import create_app
from qwenhost.api.options import FAULT_HEADER, EdgeOptions
from qwenhost.config import DASHSCOPE_ALIASES, ModelConfig, hash_key
from qwenhost.engine.fake import FakeBackend
from qwenhost.engine.protocol import GenerationRequest
from qwenhost.main import served_model
from qwenhost.ops.auth import KeyStore
from qwenhost.ops.metrics import Metrics
from qwenhost.service.chat import ChatService
from qwenhost.service.models import ModelRegistry

URL = "/compatible-mode/v1/chat/completions"
USER = [{"role": "user", "content": "Who are you?"}]


def make_client(
    backend: FakeBackend | None = None, keys: tuple[str, ...] = (), options: EdgeOptions | None = None, **model: Any
) -> TestClient:
    backend = backend or FakeBackend()
    config = ModelConfig(name="fake-model", path="unused", aliases=DASHSCOPE_ALIASES, **model)
    registry = ModelRegistry([served_model(config, backend)])
    service = ChatService(registry)
    metrics = Metrics(lambda: [(m.name, m.backend.stats()) for m in registry], {n: m.name for n, m in registry.names()})
    store = KeyStore([(f"k{i}", hash_key(k)) for i, k in enumerate(keys)])
    return TestClient(create_app(service, store, metrics, options))


def sse_events(text: str) -> list[Any]:
    frames = [block for block in text.split("\n\n") if block]
    assert all(f.startswith("data: ") for f in frames)
    return [f[6:] if f == "data: [DONE]" else json.loads(f[6:]) for f in frames]


def test_streaming_transcript() -> None:
    backend = FakeBackend(script=lambda r, c: "Hi!")
    r = make_client(backend).post(
        URL, json={"model": "qwen-plus", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"content": "", "role": "assistant"},
        {"content": "H"},
        {"content": "i"},
        {"content": "!"},
        {"content": ""},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, None, "stop"]
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 4 and usage["prompt_tokens"] == len(backend.requests[0].prompt)
    assert len({c["id"] for c in chunks}) == 1 and all(c["model"] == "qwen-plus" for c in chunks)


def test_non_streaming_is_the_fold_of_the_stream() -> None:
    client = make_client(FakeBackend(script=lambda r, c: f"answer {c}"))
    body = {"model": "qwen-plus", "messages": USER, "n": 2}
    plain = client.post(URL, json=body).json()
    streamed = sse_events(client.post(URL, json={**body, "stream": True}).text)[:-1]
    texts: dict[int, str] = {}
    for chunk in streamed:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (choice["delta"].get("content") or "")
    assert [c["message"]["content"] for c in plain["choices"]] == [texts[0], texts[1]] == ["answer 0", "answer 1"]
    assert [c["index"] for c in plain["choices"]] == [0, 1]


def test_stop_string_is_cut_and_not_returned() -> None:
    client = make_client(FakeBackend(script=lambda r, c: "one two STOP three"))
    data = client.post(URL, json={"model": "qwen-plus", "messages": USER, "stop": "STOP"}).json()
    assert data["choices"][0]["message"]["content"] == "one two "
    assert data["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_gives_length() -> None:
    client = make_client(FakeBackend(script=lambda r, c: "abcdefgh"))
    data = client.post(URL, json={"model": "qwen-plus", "messages": USER, "max_tokens": 3}).json()
    assert data["choices"][0]["message"]["content"] == "abc"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3


def test_logprobs_shape() -> None:
    client = make_client(FakeBackend(script=lambda r, c: "ok"))
    data = client.post(URL, json={"model": "qwen-plus", "messages": USER, "logprobs": True, "top_logprobs": 2}).json()
    content = data["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["o", "k"]
    assert content[0] == {"token": "o", "bytes": [111], "logprob": -0.5, "top_logprobs": []}


def test_seeds_per_choice_are_distinct() -> None:
    backend = FakeBackend()
    make_client(backend).post(URL, json={"model": "qwen-plus", "messages": USER, "n": 3, "seed": 10})
    request: GenerationRequest = backend.requests[0]
    assert [s.seed for s in request.sampling] == [10, 11, 12]


def test_model_defaults_come_from_config() -> None:
    backend = FakeBackend()
    make_client(backend).post(URL, json={"model": "qwen-plus", "messages": USER, "top_k": None})
    params = backend.requests[0].sampling[0]
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty) == (0.7, 0.8, 0, 1.05)


@pytest.mark.parametrize("stream", [False, True])
def test_validation_error_envelope(stream: bool) -> None:
    r = make_client().post(URL, json={"model": "qwen-plus", "messages": USER, "temperature": 3, "stream": stream})
    assert r.status_code == 400
    text = r.text
    if stream:  # DashScope answers a failed streaming request with an SSE-formatted error body
        assert r.headers["content-type"].startswith("text/event-stream") and text.startswith("data: ")
        text = text[6:].strip()
    data = json.loads(text)
    assert data["error"] == {
        "code": "invalid_parameter_error",
        "param": None,
        "message": "<400> InternalError.Algo.InvalidParameter: Temperature should be in [0.0, 2.0)",
        "type": "invalid_request_error",
    }
    assert data["id"] == f"chatcmpl-{data['request_id']}"


def test_unknown_model_is_404() -> None:
    r = make_client().post(URL, json={"model": "gpt-9", "messages": USER})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["message"] == "The model `gpt-9` does not exist or you do not have access to it."


def test_malformed_json() -> None:
    r = make_client().post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Required body invalid, please check the request body format."


def test_input_too_long() -> None:
    client = make_client(FakeBackend(context_length=64))
    r = client.post(URL, json={"model": "qwen-plus", "messages": [{"role": "user", "content": "x" * 500}]})
    assert r.status_code == 400 and r.json()["error"]["message"] == "Range of input length should be [1, 63]"


def test_max_tokens_range_uses_the_model_limit() -> None:
    client = make_client(FakeBackend(context_length=4096))
    r = client.post(URL, json={"model": "qwen-plus", "messages": USER, "max_tokens": 5000})
    assert r.json()["error"]["message"] == "Range of max_tokens should be [1, 4096]"


def test_auth_with_keys() -> None:
    client = make_client(keys=("sk-good",))
    body = {"model": "qwen-plus", "messages": USER}
    missing = client.post(URL, json=body)
    wrong = client.post(URL, json=body, headers={"Authorization": "Bearer sk-bad"})
    good = client.post(URL, json=body, headers={"Authorization": "Bearer sk-good"})
    assert missing.status_code == wrong.status_code == 401
    err = wrong.json()
    assert err["error"]["code"] == "invalid_api_key" and "id" not in err and err["request_id"]
    assert good.status_code == 200
    assert client.get("/health").status_code == 200  # health stays open for probes


def test_a_refused_streaming_request_gets_its_401_as_sse() -> None:
    # Spec §3.1: errors before a stream's first byte come back under their status with an SSE body.
    client = make_client(keys=("sk-good",))
    r = client.post(URL, json={"model": "qwen-plus", "messages": USER, "stream": True})
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith("data: ") and r.text.endswith("\n\n")
    assert json.loads(r.text[6:])["error"]["code"] == "invalid_api_key"
    big = {"model": "qwen-plus", "messages": [{"role": "user", "content": "x" * 2_000_000}], "stream": True}
    capped = client.post(URL, json=big)  # read only up to 1 MiB for its stream flag: answered in JSON
    assert capped.status_code == 401 and capped.headers["content-type"].startswith("application/json")
    models = client.get("/compatible-mode/v1/models")
    assert models.status_code == 401 and models.headers["content-type"].startswith("application/json")


def test_no_keys_accepts_any_token() -> None:
    r = make_client().post(URL, json={"model": "qwen-plus", "messages": USER}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 200


def test_capacity_refusal_is_immediate_429() -> None:
    r = make_client(FakeBackend(capacity=0)).post(URL, json={"model": "qwen-plus", "messages": USER})
    assert r.status_code == 429
    assert r.json()["error"] == {
        "code": "Throttling.Concurrency",
        "param": None,
        "message": "Too many concurrent requests.",
        "type": "invalid_request_error",
    }


def test_get_on_chat_is_refused_in_dashscope_words() -> None:
    r = make_client().get(URL)
    assert r.status_code == 405 and r.json()["error"]["message"] == "Request method 'GET' is not supported."


def test_models_list_and_metrics() -> None:
    client = make_client()
    data = client.get("/compatible-mode/v1/models").json()
    assert data["object"] == "list"
    assert {"fake-model", "qwen-plus"} <= {m["id"] for m in data["data"]}
    assert all(m["object"] == "model" for m in data["data"])
    client.post(URL, json={"model": "qwen-plus", "messages": USER})
    client.post(URL, json={"model": "no-such-model", "messages": USER})
    metrics = client.get("/metrics").text
    # Labels name served models only (an alias counts under its model; strangers under "unknown").
    assert 'qwenhost_requests_total{model="fake-model",status="200"} 1.0' in metrics
    assert 'qwenhost_requests_total{model="unknown",status="404"} 1.0' in metrics
    assert "no-such-model" not in metrics
    assert "qwenhost_time_to_first_token_seconds_bucket" in metrics


def test_fault_header_reaches_the_engine_only_when_test_faults_is_on() -> None:
    body = {"model": "qwen-plus", "messages": USER}
    for test_faults, expected, status in ((False, False, 200), (True, True, 500)):
        backend = FakeBackend()
        client = make_client(backend, options=EdgeOptions(test_faults=test_faults))
        assert client.post(URL, json=body, headers={FAULT_HEADER: "sample"}).status_code == status
        assert client.post(URL, json=body).status_code == 200  # the fault failed only its own request
        assert [r.inject_fault for r in backend.requests] == [expected, False]
    off = make_client(options=EdgeOptions(test_faults=False))
    assert off.post(URL, json=body, headers={FAULT_HEADER: "anything"}).status_code == 200  # no effect at all
    on = make_client(options=EdgeOptions(test_faults=True))
    r = on.post(URL, json=body, headers={FAULT_HEADER: "decode"})
    assert r.status_code == 400 and FAULT_HEADER in r.json()["error"]["message"]


class _StalledBackend(FakeBackend):
    def health(self) -> str | None:
        return "no engine step for 61 s while 2 requests wait"


def test_health_is_503_with_the_reason_when_an_engine_is_not_serving() -> None:
    assert make_client().get("/health").status_code == 200
    r = make_client(_StalledBackend()).get("/health")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "ServiceUnavailable"
    assert error["message"] == "fake-model: no engine step for 61 s while 2 requests wait"
