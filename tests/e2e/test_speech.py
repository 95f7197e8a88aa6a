"""Spoken answers (spec §4.10) end to end with the official openai SDK on the embedded model: Model Studio's
Omni streaming sample in both of its client styles, Chinese and English, the spec's errors, and the native
protocol's ``output.audio``. The answer's text is pinned with a json_schema enum, so the spoken text is known
whatever the tiny model would write."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.support.server import REPO, RunningServer, running_server

pytestmark = pytest.mark.e2e

MODEL = "qwen-omni-turbo"
ENGLISH = "Hello, I am Qwen. I can hear you, and I can answer you out loud."
CHINESE = "你好，我是通义千问。今天天气很好，我们一起去公园散步吧。"
VOICES = ("Cherry", "Serena", "Ethan", "Chelsie")


def pinned(text: str) -> dict[str, Any]:
    """A response_format that makes the model write exactly ``text`` (as a JSON string, quotes included)."""
    schema = {"type": "string", "enum": [text]}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def omni_stream(client: openai.OpenAI, text: str, voice: str = "Cherry") -> Any:
    """The request of Model Studio's Omni sample (modalities, audio, stream, include_usage)."""
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say it."}],
        modalities=["text", "audio"],
        audio={"voice": voice, "format": "wav"},
        stream=True,
        stream_options={"include_usage": True},
        response_format=pinned(text),  # type: ignore[arg-type]
        max_tokens=200,
    )


def audio_data(delta: Any) -> str | None:
    """``delta.audio["data"]`` as the official sample reads it. The sample was written when the SDK kept
    ``audio`` as an extra dict; this SDK types it (ChoiceDeltaAudio, None on text chunks): the same field."""
    audio = delta.audio
    if audio is None:
        return None
    return audio["data"] if isinstance(audio, dict) else audio.data


def sample_concatenated(client: openai.OpenAI, text: str) -> tuple[bytes, str, Any]:
    """方式1 of the official sample: concatenate the base64 fragments, decode once at the end."""
    audio_string, content, usage = "", "", None
    for chunk in omni_stream(client, text):
        if chunk.choices:
            data = audio_data(chunk.choices[0].delta)
            if data is not None:
                audio_string += data
            content += chunk.choices[0].delta.content or ""
        else:
            usage = chunk.usage
    return base64.b64decode(audio_string), content, usage


def sample_per_chunk(client: openai.OpenAI, text: str, voice: str = "Cherry") -> bytes:
    """方式2: decode each fragment as it comes (live playback), as int16 samples."""
    pieces = []
    for chunk in omni_stream(client, text, voice):
        fragment = audio_data(chunk.choices[0].delta) if chunk.choices else None
        if fragment is not None:
            data = base64.b64decode(fragment)
            assert len(data) % 6 == 0  # whole samples and whole base64 groups
            pieces.append(np.frombuffer(data, dtype=np.int16))
    return np.concatenate(pieces).tobytes()


def check_speech(pcm: bytes, text: str, seconds_per_char: tuple[float, float]) -> None:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    seconds = len(samples) / 24_000
    low, high = seconds_per_char
    assert low * len(text) <= seconds <= high * len(text), (seconds, len(text))
    assert np.sqrt(np.mean(samples**2)) > 300  # not silence: speech at a few percent of full scale at least


def test_omni_sample_both_client_styles_get_the_same_english_speech(client: openai.OpenAI) -> None:
    pcm, content, usage = sample_concatenated(client, ENGLISH)
    assert content == json.dumps(ENGLISH)  # the text is unchanged in delta.content
    assert pcm == sample_per_chunk(client, ENGLISH)  # identical: and deterministic across requests
    check_speech(pcm, ENGLISH, (0.03, 0.15))
    # a WAV written from it as the sample does opens in the standard reader at 24 kHz
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24_000)
        out.writeframes(pcm)
    with wave.open(io.BytesIO(buffer.getvalue())) as back:
        assert (back.getframerate(), back.getnchannels(), back.getsampwidth()) == (24_000, 1, 2)
        assert back.readframes(back.getnframes()) == pcm
    # usage: audio tokens at 25 per second, counted in completion_tokens beside the text tokens
    assert usage is not None and usage.completion_tokens_details is not None
    audio_tokens = usage.completion_tokens_details.audio_tokens
    assert audio_tokens == -(-len(pcm) * 25 // 48_000)
    assert usage.completion_tokens == audio_tokens + usage.completion_tokens_details.text_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chinese_is_spoken_in_mandarin(client: openai.OpenAI) -> None:
    pcm, content, _ = sample_concatenated(client, CHINESE)
    assert json.loads(content) == CHINESE
    check_speech(pcm, CHINESE, (0.1, 0.6))  # a syllable per character; English letter rates would not fit


def test_each_voice_sounds_different(client: openai.OpenAI) -> None:
    text = "One two three."
    heard = {sample_per_chunk(client, text, voice) for voice in VOICES}
    assert len(heard) == len(VOICES)


def test_audio_chunks_follow_the_text_and_precede_the_finish(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say it."}],
        "modalities": ["text", "audio"],
        "audio": {"voice": "Ethan", "format": "wav"},
        "stream": True,
        "response_format": pinned(ENGLISH),
    }
    kinds = []
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                delta = choice["delta"]
                if "audio" in delta:
                    assert set(delta["audio"]) == {"data", "expires_at"} and "content" not in delta
                    kinds.append("audio")
                elif choice["finish_reason"]:
                    kinds.append("finish")
                elif delta.get("content"):
                    kinds.append("text")
    # the first sentence's text before any audio; every audio chunk before the finish (then the usage)
    assert kinds[0] == "text" and kinds[-1] == "finish" and kinds.count("finish") == 1 and "audio" in kinds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stream": False}, "'audio' output only support with stream=true"),
        (
            {"audio": {"voice": "Tina", "format": "wav"}},
            "Input should be 'Cherry', 'Serena', 'Ethan' or 'Chelsie': parameters.audio.voice",
        ),
        ({"audio": {"voice": "Cherry", "format": "mp3"}}, "Input should be 'wav': parameters.audio.format"),
        ({"audio": None}, "needs 'audio'"),
    ],
)
def test_errors_match_the_spec(client: openai.OpenAI, change: dict[str, Any], message: str) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "modalities": ["text", "audio"],
        "audio": {"voice": "Cherry", "format": "wav"},
        "stream": True,
        **change,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    assert caught.value.status_code == 400
    # a streaming request's error body is SSE-shaped, as DashScope sends it (spec §3.1)
    text = str(caught.value.body)
    error = json.loads(text.removeprefix("data: "))["error"] if text.startswith("data: ") else caught.value.body
    assert isinstance(error, dict) and message in error["message"]
    assert error["code"] == "invalid_parameter_error"


def test_native_protocol_carries_output_audio(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "input": {"messages": [{"role": "user", "content": [{"text": "Say it."}]}]},
        "parameters": {
            "modalities": ["text", "audio"],
            "audio": {"voice": "Serena", "format": "wav"},
            "incremental_output": True,
            "response_format": pinned(ENGLISH),
        },
    }
    url = f"{server.root}/api/v1/services/aigc/multimodal-generation/generation"
    audio, last = "", None
    with httpx.stream("POST", url, json=body, headers={"X-DashScope-SSE": "enable"}, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                last = json.loads(line[5:])
                if "audio" in last["output"]:
                    assert last["output"]["audio"]["id"] == last["request_id"]
                    audio += last["output"]["audio"]["data"]
    pcm = base64.b64decode(audio)
    check_speech(pcm, ENGLISH, (0.03, 0.15))
    assert last is not None and last["output"]["choices"][0]["finish_reason"] == "stop"
    assert last["usage"]["output_tokens_details"]["audio_tokens"] == -(-len(pcm) * 25 // 48_000)


def test_dashscope_sdk_reads_output_audio(server: RunningServer) -> None:
    dashscope = pytest.importorskip("dashscope")
    saved = dashscope.base_http_api_url
    dashscope.base_http_api_url = server.root + "/api/v1"
    try:
        chunks = list(
            dashscope.MultiModalConversation.call(
                api_key="sk-local-test",
                model="qwen3-omni-flash",
                messages=[{"role": "user", "content": [{"text": "Say it."}]}],
                modalities=["text", "audio"],
                audio={"voice": "Chelsie", "format": "wav"},
                response_format=pinned(ENGLISH),
                stream=True,
                incremental_output=True,
            )
        )
    finally:
        dashscope.base_http_api_url = saved
    assert all(c.status_code == 200 for c in chunks), chunks[-1]
    audio = "".join(c.output.audio.data for c in chunks if c.output.audio is not None)
    check_speech(base64.b64decode(audio), ENGLISH, (0.03, 0.15))
    text = "".join(
        c.output.choices[0].message.content[0]["text"] for c in chunks if c.output.choices[0].message.content
    )
    assert json.loads(text) == ENGLISH


def test_a_server_side_tool_loop_answer_is_spoken(tiny_qwen3_gguf: Path, tmp_path: Path) -> None:
    """A forced search runs through service/tool_loop.py; the answer it leads to is spoken after it."""
    (tmp_path / "doc.md").write_text("# Note\n\nThe capybara festival opens on Tuesday.\n", "utf-8")
    index = tmp_path / "index.sqlite3"
    subprocess.run(
        [sys.executable, "-m", "qwenhost", "index", "add", str(tmp_path / "doc.md"), "--index", str(index)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    config = (
        f'[[models]]\nname = "tiny"\npath = "{tiny_qwen3_gguf}"\ncontext_length = 2048\nthreads = 1\n'
        f'aliases = ["{MODEL}"]\n[search]\nindex_path = "{index}"\n'
    )
    with running_server(tmp_path, config=config) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=120)
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "When does the capybara festival open?"}],
            modalities=["text", "audio"],
            audio={"voice": "Cherry", "format": "wav"},
            stream=True,
            response_format=pinned(ENGLISH),  # type: ignore[arg-type]
            extra_body={"enable_search": True, "search_options": {"forced_search": True}, "enable_thinking": False},
        )
        fragments, content = [], ""
        for chunk in stream:
            if chunk.choices:
                fragment = audio_data(chunk.choices[0].delta)
                fragments += [fragment] if fragment is not None else []
                content += chunk.choices[0].delta.content or ""
    assert json.loads(content) == ENGLISH
    check_speech(base64.b64decode("".join(fragments)), ENGLISH, (0.03, 0.15))
