"""The media pipeline of a request: per-request bounds, siblings cancelled on the first failure, decoding off
the event loop. Fetches go over real loopback sockets to a local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image

from qwenhost.core.types import ChatRequest, MediaPart, Message, TextPart
from qwenhost.engine.protocol import MediaCapabilities, ModelInfo
from qwenhost.media import av_decode
from qwenhost.media.errors import MediaError
from qwenhost.media.policy import MediaPolicy
from qwenhost.service import media as service_media
from qwenhost.service.media import DecodedPart, MediaPipeline
from qwenhost.service.models import ServedModel


def png_bytes(w: int, h: int, seed: int = 0) -> bytes:
    pixels = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


PNG = png_bytes(64, 48)
HITS: collections.Counter[str] = collections.Counter()
CLOSED: collections.defaultdict[str, threading.Event] = collections.defaultdict(threading.Event)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        HITS[self.path] += 1
        if self.path.startswith("/img"):
            self._head(200, len(PNG))
            self.wfile.write(PNG)
        elif self.path.startswith("/slow/"):  # a large image that trickles in: minutes to finish
            self._head(200, 100_000)
            self._trickle(CLOSED[self.path])
        else:  # fails at once
            self._head(404, 0)

    def _head(self, status: int, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _trickle(self, closed: threading.Event) -> None:
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client hung up: its fetch was cancelled
            closed.set()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


CAPS = MediaCapabilities("qwen2.5vl_merger", None, patch_size=14, merge_size=2)
INFO = ModelInfo(0, 0, 0, None, "", "", {}, {}, media=CAPS)
# Only .backend.info and .max_input_tokens are read.
MODEL = cast(ServedModel, SimpleNamespace(backend=SimpleNamespace(info=INFO), max_input_tokens=8191))


def image(url: str) -> MediaPart:
    return MediaPart("image", (url,))


def data_url(blob: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(blob).decode()


def request(*parts: MediaPart) -> ChatRequest:
    return ChatRequest("qwen-vl-plus", (Message("user", (*parts, TextPart("?"))),))


def decode(
    req: ChatRequest, then: Callable[[], Any] | None = None, model: ServedModel = MODEL, **policy: Any
) -> list[DecodedPart]:
    """Decode ``req``; ``then`` runs on the same, still running, loop once decode() has returned or raised."""

    async def go() -> list[DecodedPart]:
        pipeline = MediaPipeline(MediaPolicy(allow_private_urls=True, **policy))
        try:
            return await pipeline.decode(req, model)
        finally:
            if then is not None:
                await then()
            await pipeline.close()

    return asyncio.run(go())


def closed_soon(path: str) -> Callable[[], Any]:
    async def wait() -> None:
        for _ in range(100):  # up to 10 s: generous on a busy machine, far below the minute the trickle lasts
            if CLOSED[path].is_set():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the fetch of {path} was left running after its sibling failed")

    return wait


def test_parts_and_frames_decode_in_order(origin: str) -> None:
    frames = MediaPart("video_frames", tuple(data_url(png_bytes(64, 48, seed=i)) for i in range(5)))
    out = decode(request(image(origin + "/img/a"), frames, image(data_url(png_bytes(300, 200)))))
    assert [p.kind for p in out] == ["image", "video_frames", "image"]
    assert (out[0].pictures[0].width, out[0].pictures[0].height) == (56, 56)
    assert len(out[1].pictures) == 6 and out[1].pictures[5] is out[1].pictures[4]  # the last frame repeats
    assert {(p.width, p.height) for p in out[1].pictures} == {(280, 196)}  # grown to the 50176 px video minimum
    assert (out[2].pictures[0].width, out[2].pictures[0].height) == (308, 196)


def test_too_many_parts_is_refused_before_any_fetch(origin: str) -> None:
    frames = MediaPart("video_frames", tuple(f"{origin}/img/count-frame{i}" for i in range(4)))
    req = request(image(origin + "/img/count-a"), frames)  # 1 + 4 items
    message = re.escape(
        "The request has 5 media items (each image, video, audio clip and each frame of a frame list counts as one);"
        " at most 4 are accepted (max_media_parts)."
    )
    with pytest.raises(MediaError, match=message):
        decode(req, max_media_parts=4)
    assert not [path for path in HITS if "count-" in path]
    assert len(decode(req, max_media_parts=5)) == 2


def test_total_bytes_are_bounded(origin: str) -> None:
    req = request(image(origin + "/img/b1"), image(data_url(PNG)), image(origin + "/img/b2"))
    with pytest.raises(MediaError, match=re.escape(f"exceed {3 * len(PNG) - 1} bytes in all (max_media_bytes).")):
        decode(req, max_media_bytes=3 * len(PNG) - 1)
    assert len(decode(req, max_media_bytes=3 * len(PNG))) == 3


def test_media_past_the_input_limit_is_refused_from_the_headers() -> None:
    small = cast(ServedModel, SimpleNamespace(backend=SimpleNamespace(info=INFO), max_input_tokens=393))
    header_only = png_bytes(640, 480)[:200]  # 17 x 23 = 391 tokens announced; the pixels are cut off
    with pytest.raises(MediaError, match="could not be decoded"):  # within the limit: its pixels are decoded
        decode(request(image(data_url(header_only))), model=small)
    with pytest.raises(MediaError, match=re.escape("Range of input length should be [1, 393]")):
        # 4 + 391 tokens; one decoder thread, so the parts are admitted in order and the second is refused
        decode(request(image(data_url(PNG)), image(data_url(header_only))), model=small, max_concurrent_decodes=1)
    frames = MediaPart("video_frames", (data_url(PNG),) * 4)  # 2 pairs of 7 x 10 tokens
    assert len(decode(request(frames), model=small)) == 1
    limited = ChatRequest("qwen-vl-plus", request(frames).messages, max_input_tokens=139)
    with pytest.raises(MediaError, match=re.escape("Range of input length should be [1, 139]")):
        decode(limited, model=small)
    video = data_url(_video())  # 2 s at 4 fps: 4 frames sampled, 2 pairs of 7 x 10 tokens
    assert len(decode(request(MediaPart("video", (video,))), model=small)) == 1
    with pytest.raises(MediaError, match=re.escape("Range of input length should be [1, 139]")):
        decode(ChatRequest("qwen-vl-plus", request(MediaPart("video", (video,))).messages, max_input_tokens=139))


def test_a_failed_fetch_cancels_its_siblings(origin: str) -> None:
    slow = "/slow/fetch"
    started = time.monotonic()
    with pytest.raises(MediaError, match=re.escape("Failed to download multimodal content.")):
        decode(request(image(origin + slow), image(origin + "/missing")), then=closed_soon(slow))
    assert time.monotonic() - started < 30  # the trickle alone takes a minute


def test_a_failed_decode_cancels_the_fetches(origin: str) -> None:
    slow = "/slow/decode"
    frames = MediaPart("video_frames", (origin + slow, *[data_url(PNG)] * 4))
    with pytest.raises(MediaError, match="The multimodal content could not be decoded: image"):
        decode(request(frames, image(data_url(b"not an image"))), then=closed_soon(slow))


def test_decoding_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[tuple[str, str, bool]] = []

    def watch(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop = True
            except RuntimeError:
                on_loop = False
            threads.append((name, threading.current_thread().name, on_loop))
            return fn(*args, **kwargs)

        return watched

    monkeypatch.setattr(service_media, "load_picture", watch("image", service_media.load_picture))
    monkeypatch.setattr(service_media, "open_image", watch("frame", service_media.open_image))
    monkeypatch.setattr(av_decode, "decode_video", watch("video", av_decode.decode_video))
    video = data_url(_video())
    frames = MediaPart("video_frames", (data_url(PNG),) * 4)
    decode(request(image(data_url(PNG)), frames, MediaPart("video", (video,))))
    assert {name for name, _, _ in threads} == {"image", "frame", "video"}
    assert all(thread.startswith("qwenhost-media") and not on_loop for _, thread, on_loop in threads), threads


def _video() -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for i in range(8):
            pixels = np.full((48, 64, 3), i * 30, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_policy_refuses_bounds_below_one() -> None:
    with pytest.raises(ValueError, match=re.escape("[media] max_media_parts must be a whole number of at least 1")):
        MediaPolicy(max_media_parts=0)
    with pytest.raises(ValueError, match=re.escape("[media] max_concurrent_decodes must be a whole number")):
        MediaPolicy(max_concurrent_decodes="4")  # type: ignore[arg-type]
