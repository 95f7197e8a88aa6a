"""Images, video and audio through the real server on tiny random-weight Qwen-VL / Omni fixtures (openai SDK).

Token counts are checked against the smart-resize arithmetic of spec §4.11, written out here
independently; each image or frame pair also costs its two placeholder tokens (vision start/end).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import re
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.fixtures.tiny_vlm import build_all
from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e


def serve(tmp: Path, name: str, extra: str = "") -> contextlib.AbstractContextManager[RunningServer]:
    text, mmproj = build_all(tmp / "fixtures")[name]
    config = f"""
[media]
allow_private_urls = true
{extra}
[[models]]
name = "vl"
path = "{text}"
mmproj = "{mmproj}"
aliases = ["qwen-vl-plus", "qwen3-vl-plus"]
parallel = 2
context_length = 8192
batch_tokens = 256
"""
    return running_server(tmp, config=config)


@pytest.fixture(scope="module")
def qwen25(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(tmp_path_factory.mktemp("qwen25"), "qwen25vl") as srv:
        yield srv


@pytest.fixture(scope="module")
def vl(qwen25: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=qwen25.base_url, api_key="sk-test", max_retries=0, timeout=120)


def expected_tokens(h: int, w: int, f: int, lo: int, hi: int) -> int:
    hh, ww = max(f, round(h / f) * f), max(f, round(w / f) * f)
    if hh * ww > hi:
        b = math.sqrt(h * w / hi)
        hh, ww = max(f, math.floor(h / b / f) * f), max(f, math.floor(w / b / f) * f)
    elif hh * ww < lo:
        b = math.sqrt(lo / (h * w))
        hh, ww = math.ceil(h * b / f) * f, math.ceil(w * b / f) * f
    return (hh // f) * (ww // f)


def png(w: int, h: int, seed: int = 0, mode: str = "RGB") -> str:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((h, w, 4 if mode == "RGBA" else 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_message(url: str, text: str = "What is in this image?", **controls: int) -> list[dict[str, object]]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}, **controls}, {"type": "text", "text": text}],
        }
    ]


def usage_of(client: openai.OpenAI, messages: list[dict[str, object]], **kw: object) -> openai.types.CompletionUsage:
    r = client.chat.completions.create(model="qwen-vl-plus", messages=messages, max_tokens=2, **kw)  # type: ignore[arg-type]
    assert r.usage is not None
    return r.usage


@pytest.mark.parametrize(
    ("w", "h", "controls", "lo", "hi"),
    [
        (300, 200, {}, 3136, 1003520),
        (640, 480, {}, 3136, 1003520),
        (30, 30, {}, 3136, 1003520),
        (2000, 120, {}, 3136, 1003520),
        (1200, 900, {"max_pixels": 200704}, 3136, 200704),
        (100, 80, {"min_pixels": 401408}, 401408, 1003520),
    ],
)
def test_image_token_grid(vl: openai.OpenAI, w: int, h: int, controls: dict[str, int], lo: int, hi: int) -> None:
    usage = usage_of(vl, image_message(png(w, h), **controls))
    details = usage.prompt_tokens_details
    assert details is not None
    assert details.image_tokens == expected_tokens(h, w, 28, lo, hi) + 2
    assert details.text_tokens == usage.prompt_tokens - details.image_tokens  # type: ignore[attr-defined]


def test_high_resolution_ignores_max_pixels(vl: openai.OpenAI) -> None:
    msg = image_message(png(1800, 1200), max_pixels=100352)
    low = usage_of(vl, msg).prompt_tokens_details.image_tokens  # type: ignore[union-attr]
    high = usage_of(vl, msg, extra_body={"vl_high_resolution_images": True}).prompt_tokens_details.image_tokens  # type: ignore[union-attr]
    assert low == expected_tokens(1200, 1800, 28, 3136, 100352) + 2
    assert high == expected_tokens(1200, 1800, 28, 3136, 16384 * 28 * 28) + 2


def test_transparent_png_and_two_images(vl: openai.OpenAI) -> None:
    content = [
        {"type": "image_url", "image_url": {"url": png(64, 64, mode="RGBA")}},
        {"type": "image_url", "image_url": {"url": png(128, 96, seed=2)}},
        {"type": "text", "text": "Compare."},
    ]
    usage = usage_of(vl, [{"role": "user", "content": content}])
    assert usage.prompt_tokens_details.image_tokens == (  # type: ignore[union-attr]
        expected_tokens(64, 64, 28, 3136, 1003520) + expected_tokens(96, 128, 28, 3136, 1003520) + 4
    )


def test_frame_list_and_fps(vl: openai.OpenAI) -> None:
    frames = [png(64, 48, seed=i) for i in range(5)]  # 5 frames -> 6 (the last repeats), 3 pairs
    usage = usage_of(
        vl, [{"role": "user", "content": [{"type": "video", "video": frames, "fps": 2}, {"type": "text", "text": "?"}]}]
    )
    per_pair = expected_tokens(48, 64, 28, 50176, 501760)
    assert usage.prompt_tokens_details.video_tokens == 3 * per_pair + 2  # type: ignore[union-attr]


def make_video(seconds: float, fps: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            pixels = np.full((size[1], size[0], 3), (i * 20) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(("fps", "frames"), [(2.0, 8), (1.0, 4), (4.0, 16), (0.1, 4)])
def test_video_file_sampled_at_fps(vl: openai.OpenAI, fps: float, frames: int) -> None:
    url = "data:video/mp4;base64," + base64.b64encode(make_video(4, 10)).decode()
    part = {"type": "video_url", "video_url": {"url": url}, "fps": fps}
    usage = usage_of(vl, [{"role": "user", "content": [part, {"type": "text", "text": "Describe."}]}])
    per_pair = expected_tokens(48, 64, 28, 50176, 501760)
    assert usage.prompt_tokens_details.video_tokens == frames // 2 * per_pair + 2  # type: ignore[union-attr]


@pytest.mark.parametrize("fps", [0.01, 10.5])
def test_fps_outside_its_range_is_refused_not_clamped(vl: openai.OpenAI, fps: float) -> None:
    url = "data:video/mp4;base64," + base64.b64encode(make_video(4, 10)).decode()
    part = {"type": "video_url", "video_url": {"url": url}, "fps": fps}
    with pytest.raises(openai.BadRequestError, match=re.escape("fps should be in [0.1, 10.0]")):
        usage_of(vl, [{"role": "user", "content": [part, {"type": "text", "text": "Describe."}]}])


def test_streaming_equals_non_streaming(vl: openai.OpenAI) -> None:
    msg = image_message(png(200, 150, seed=9))
    full = vl.chat.completions.create(model="qwen-vl-plus", messages=msg, max_tokens=12, seed=7)  # type: ignore[arg-type]
    chunks = list(
        vl.chat.completions.create(model="qwen-vl-plus", messages=msg, max_tokens=12, seed=7, stream=True)  # type: ignore[arg-type]
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content


def metric(srv: RunningServer, name: str) -> float:
    text = httpx.get(f"{srv.root}/metrics").text
    match = re.search(rf"^qwenhost_engine_{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def test_repeated_image_is_reused_not_reencoded(vl: openai.OpenAI, qwen25: RunningServer) -> None:
    msg = image_message(png(320, 240, seed=42), text="First question about it.")
    before = metric(qwen25, "media_chunks_encoded")
    first = usage_of(vl, msg)
    second = usage_of(vl, msg)
    assert metric(qwen25, "media_chunks_encoded") == before + 1
    image = expected_tokens(240, 320, 28, 3136, 1003520)
    assert second.prompt_tokens_details.cached_tokens >= first.prompt_tokens - 1  # type: ignore[union-attr]
    assert second.prompt_tokens_details.cached_tokens > image  # type: ignore[union-attr]


def test_vision_request_runs_beside_a_text_request(vl: openai.OpenAI) -> None:
    async def go() -> None:
        client = openai.AsyncOpenAI(base_url=str(vl.base_url), api_key="sk-test", max_retries=0, timeout=120)
        text = await client.chat.completions.create(
            model="qwen-vl-plus",
            messages=[{"role": "user", "content": "Tell a long story."}],
            max_tokens=400,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        received = 0
        async for _chunk in text:
            received += 1
            if received == 3:  # the text sequence is decoding: now a vision request arrives
                r = await client.chat.completions.create(
                    model="qwen-vl-plus",
                    messages=image_message(png(500, 400, seed=5)),
                    max_tokens=3,  # type: ignore[arg-type]
                )
                assert r.usage and r.usage.prompt_tokens_details.image_tokens  # type: ignore[union-attr]
                vision_done_at = received
        assert received > vision_done_at + 100  # the text stream went on afterwards, in the same batch loop

    asyncio.run(go())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
            "The provided URL does not appear to be valid.",
        ),
        (
            [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()},
                }
            ],
            "The multimodal content could not be decoded",
        ),
        (
            [{"type": "image_url", "image_url": {"url": png(8, 40)}}],
            "The image length and width do not meet the model restrictions.",
        ),
        (
            [{"type": "image_url", "image_url": {"url": png(2100, 10)}}],
            "The image length and width do not meet the model restrictions.",
        ),
        ([{"type": "video", "video": [png(32, 32)] * 3}], "the range of sequence images should be (4, 512)."),
        (
            [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/none.png"}}],
            "Failed to download multimodal content.",
        ),
        (
            [{"type": "input_audio", "input_audio": {"data": png(32, 32), "format": "wav"}}],
            "does not support audio input",
        ),
    ],
)
def test_errors(vl: openai.OpenAI, content: list[dict[str, object]], message: str) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            vl.chat.completions.create(
                model="qwen-vl-plus", messages=[{"role": "user", "content": content}], stream=stream
            )  # type: ignore[arg-type]
        assert info.value.status_code == 400
        assert message in info.value.response.text  # streaming: the SSE-framed error body (spec §3.1)


def test_data_uri_limit(vl: openai.OpenAI) -> None:
    huge = "data:image/png;base64," + base64.b64encode(b"\0" * (10_485_760 + 10)).decode()
    with pytest.raises(
        openai.BadRequestError, match=re.escape("Exceeded limit on max bytes per data-uri item : 10485760'.")
    ):
        usage_of(vl, image_message(huge))


def test_too_many_media_parts_get_an_envelope_and_the_connection_lives_on(qwen25: RunningServer) -> None:
    tiny = png(12, 12)
    frames = {"type": "video", "video": [tiny] * 500}  # a frame list counts each of its frames
    content = [frames, *[{"type": "image_url", "image_url": {"url": tiny}}] * 13, {"type": "text", "text": "?"}]
    with httpx.Client(base_url=qwen25.base_url, headers={"authorization": "Bearer sk-test"}, timeout=120) as http:
        for stream in (False, True):
            body = {"model": "qwen-vl-plus", "messages": [{"role": "user", "content": content}], "stream": stream}
            r = http.post("/chat/completions", json=body)
            assert r.status_code == 400
            text = r.text.removeprefix("data: ") if stream else r.text
            error = json.loads(text)["error"]
            assert error["code"] == "invalid_parameter_error"
            assert "The request has 513 media items" in error["message"]
            assert "at most 512 are accepted (max_media_parts)" in error["message"]
        ok = http.post(
            "/chat/completions", json={"model": "qwen-vl-plus", "messages": image_message(tiny), "max_tokens": 2}
        )
        assert ok.status_code == 200  # the same keep-alive connection serves the next request


def test_text_only_model_refuses_media(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=re.escape("does not support image input")) as info:
        client.chat.completions.create(model="qwen-plus", messages=image_message(png(64, 64)))
    assert info.value.status_code == 400


def test_ssrf_refused_by_default(tmp_path: Path) -> None:
    text, mmproj = build_all(tmp_path.parent / "shared-fixtures")["qwen25vl"]
    config = (
        f'[[models]]\nname = "vl"\npath = "{text}"\nmmproj = "{mmproj}"\naliases = ["qwen-vl-plus"]\nparallel = 1\n'
    )
    with running_server(tmp_path, config=config) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        for host in ("127.0.0.1", "169.254.169.254", "10.0.0.1"):
            with pytest.raises(openai.BadRequestError, match=re.escape("Failed to download multimodal content.")):
                usage_of(c, image_message(f"http://{host}:{srv.port}/health"))


def test_qwen3_vl_32px_and_timestamped_video(tmp_path: Path) -> None:
    with serve(tmp_path, "qwen3vl") as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=120)
        usage = usage_of(c, image_message(png(640, 480)))
        assert usage.prompt_tokens_details.image_tokens == expected_tokens(480, 640, 32, 65536, 2621440) + 2  # type: ignore[union-attr]
        frames = [png(64, 64, seed=i) for i in range(4)]
        video = usage_of(
            c, [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "?"}]}]
        )
        per_pair = expected_tokens(64, 64, 32, 65536, 655360)
        assert video.prompt_tokens_details.video_tokens == 2 * (per_pair + 2)  # type: ignore[union-attr]


def wav(seconds: float, rate: int = 22050) -> str:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def test_omni_audio_and_image(tmp_path: Path) -> None:
    with serve(tmp_path, "omni") as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=120)
        content = [
            {"type": "input_audio", "input_audio": {"data": wav(2.0), "format": "wav"}},
            {"type": "image_url", "image_url": {"url": png(112, 84)}},
            {"type": "text", "text": "What do you hear and see?"},
        ]
        usage = usage_of(c, [{"role": "user", "content": content}])
        details = usage.prompt_tokens_details
        assert details.audio_tokens == 750 + 2  # mtmd's Whisper window: 30 s -> 750 tokens (docs/multimodal.md)  # type: ignore[union-attr]
        assert details.image_tokens == 12 + 2  # type: ignore[union-attr]
        assert details.text_tokens == usage.prompt_tokens - 752 - 14  # type: ignore[union-attr]


def test_unlisted_vision_names_route_to_the_vision_model(vl: openai.OpenAI, qwen25: RunningServer) -> None:
    """qwen-vl-max and qwen3-vl-flash are in no aliases list: the vision model answers them (docs/models.md)."""
    r = vl.chat.completions.create(model="qwen-vl-max", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert r.model == "qwen-vl-max" and r.choices[0].message.content is not None
    data = {m["id"]: m for m in httpx.get(f"{qwen25.base_url}/models", timeout=30).json()["data"]}
    assert data["qwen3-vl-flash"]["root"] == "vl" and data["qwen3-vl-flash"]["policy"]["route"] == "vision"
