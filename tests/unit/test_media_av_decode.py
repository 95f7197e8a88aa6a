"""Video and audio decoding with PyAV: frames resized as they are decoded, same output as decode-then-resize."""

from __future__ import annotations

import io
import threading
import weakref
from collections.abc import Callable

import av
import numpy as np
import pytest
from PIL import Image

from qwenhost.formats.vision import QWEN2_5_VL
from qwenhost.media import av_decode, errors, image
from qwenhost.media.decoded import Picture
from qwenhost.media.policy import MediaPolicy
from qwenhost.media.resize import ImageRule, sample_count, sample_indices, video_rule

POLICY = MediaPolicy()


def make_video(frames: int, rate: int, size: tuple[int, int], seed: int = 0) -> bytes:
    """An mp4 of noise frames (so that a wrong frame or a wrong resize shows in the pixels)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def rule_for(max_pixels: int | None = None) -> Callable[[int], ImageRule]:
    def rule(count: int) -> ImageRule:
        return video_rule(
            QWEN2_5_VL.pixels,
            28,
            count,
            min_pixels=None,
            max_pixels=max_pixels,
            total_pixels=None,
            max_tokens=16384,
        )

    return rule


def reference(data: bytes, fps: float, rule: Callable[[int], ImageRule]) -> tuple[list[Picture], list[float]]:
    """The decoder before frames were resized as decoded: keep every wanted frame at full size, then resize."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        video_fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        total = stream.frames or max(1, round(duration * video_fps))
        count = sample_count(total, video_fps, fps, POLICY.max_video_frames)
        wanted = sample_indices(total, count)
        full: dict[int, Image.Image] = {}
        for index, frame in enumerate(container.decode(stream)):
            if index > max(wanted):
                break
            if index in wanted:
                full[index] = frame.to_image().convert("RGB")
    picked = [full[i] for i in wanted]
    height, width = rule(count).size(picked[0].height, picked[0].width)
    return [image.resized(p, height, width) for p in picked], [i / video_fps for i in wanted]


@pytest.mark.parametrize(
    ("frames", "rate", "size", "fps", "max_pixels"),
    [
        (40, 10, (64, 48), 2.0, None),  # upscaled to the video minimum
        (40, 10, (64, 48), 0.01, None),  # the 4-frame floor
        (45, 15, (640, 360), 4.0, None),  # shrunk by the shared total budget
        (30, 10, (500, 300), 10.0, 50176),  # every frame, a per-frame max_pixels
        (25, 25, (200, 150), 3.0, None),  # an odd rate: indices are rounded, some repeat
    ],
)
def test_same_frames_and_sizes_as_decode_then_resize(
    frames: int, rate: int, size: tuple[int, int], fps: float, max_pixels: int | None
) -> None:
    data = make_video(frames, rate, size, seed=frames)
    got = av_decode.decode_video(data, POLICY, fps, rule_for(max_pixels))
    pictures, timestamps = reference(data, fps, rule_for(max_pixels))
    assert [(p.width, p.height) for p in got.pictures] == [(p.width, p.height) for p in pictures]
    assert [p.rgb for p in got.pictures] == [p.rgb for p in pictures]
    assert list(got.timestamps) == timestamps
    assert got.fps == fps


def test_frames_are_resized_as_they_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most one full-resolution frame is alive at a time, however many frames are sampled."""
    seen: list[weakref.ref[Image.Image]] = []
    alive_at_resize: list[int] = []
    original = image.resized

    def watched(img: Image.Image, height: int, width: int) -> Picture:
        seen.append(weakref.ref(img))
        alive_at_resize.append(sum(r() is not None for r in seen))
        return original(img, height, width)

    monkeypatch.setattr(image, "resized", watched)
    frames = av_decode.decode_video(make_video(24, 4, (320, 240)), POLICY, 4.0, rule_for())
    assert len(frames.pictures) == 24
    assert len(alive_at_resize) == 24
    assert max(alive_at_resize) == 1  # decode-then-resize held all 24 at the first resize


def test_stop_abandons_video_and_audio() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(errors.Stopped):
        av_decode.decode_video(make_video(8, 4, (64, 48)), POLICY, 2.0, rule_for(), stop)
    with pytest.raises(errors.Stopped):
        av_decode.decode_audio(wav(0.5), POLICY, 16000, stop=stop)
    assert av_decode.decode_audio(wav(0.5), POLICY, 16000).seconds == pytest.approx(0.5, abs=0.05)


def wav(seconds: float, rate: int = 22050) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        samples = (np.sin(np.arange(int(seconds * rate)) / 10) * 12000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()
