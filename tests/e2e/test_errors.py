"""Bad input gets DashScope's status, code and verbatim message through the official SDK."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.support.server import REPO, RunningServer, running_server

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hi"}]


def test_developer_role(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="qwen-plus", messages=[{"role": "developer", "content": "x"}, *USER])
    assert info.value.status_code == 400
    assert "developer is not one of ['system', 'assistant', 'user', 'tool', 'function']" in str(info.value)


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="qwen-nonexistent", messages=USER)
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_streaming_validation_error_has_error_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="qwen-plus", messages=USER, stream=True, top_p=0)
    # Like DashScope, the body is SSE-formatted (`data: {...}`), which clients log verbatim (spec §3.1).
    assert str(info.value.body).startswith("data: {")
    assert "Range of top_p should be (0.0, 1.0]" in str(info.value.body)


def test_bad_values(client: openai.OpenAI) -> None:
    cases = [
        ({"temperature": 2}, "Temperature should be in [0.0, 2.0)"),
        ({"n": 9}, "Range of n should be [1, 4]"),
        ({"max_tokens": 0}, "Range of max_tokens should be [1, 4096]"),
        ({"seed": -1}, "-1 is lesser than the minimum of 0 - 'seed'"),
        ({"logprobs": True, "top_logprobs": 9}, "Range of top_logprobs should be [0, 5]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="qwen-plus", messages=USER, **kwargs)  # type: ignore[arg-type]
        assert message in str(info.value), kwargs


def test_malformed_body_and_server_still_serves(server: RunningServer, client: openai.OpenAI) -> None:
    r = httpx.post(
        f"{server.base_url}/chat/completions",
        content=b"\xff\xfe{",
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Required body invalid, please check the request body format."
    assert client.chat.completions.create(model="qwen-plus", messages=USER, max_tokens=2).choices


def test_api_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with running_server(
        tmp_path,
        ("--api-key", "sk-one", "--context-length", "2048", "--parallel", "1"),
        env={"QWENHOST_API_KEYS": "sk-two"},
    ) as srv:
        for key in ("sk-one", "sk-two"):
            ok = openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)
            assert ok.chat.completions.create(model="qwen-plus", messages=USER, max_tokens=2).choices
        bad = openai.OpenAI(base_url=srv.base_url, api_key="sk-three", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="qwen-plus", messages=USER)
        assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        assert httpx.get(f"{srv.base_url}/models", timeout=10).status_code == 401
        assert "sk-one" not in srv.log() and "sk-two" not in srv.log()


def test_refuses_public_bind_without_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qwenhost", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr


def test_config_errors_stop_start_up_naming_key_and_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "qwenhost.toml"
    cfg.write_text('[server]\nport = 8000\nlog_levle = "debug"\n', "utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "qwenhost", "serve", "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{cfg}: [server]: unknown keys: 'log_levle'" in result.stderr
