"""Video frames and audio samples with PyAV: container whitelist, byte, duration and frame limits."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np

from qwenhost.media import errors, image
from qwenhost.media.decoded import Clip, Frames, Picture
from qwenhost.media.policy import MediaPolicy
from qwenhost.media.resize import FRAME_FACTOR, ImageRule, sample_count, sample_indices

AUDIO_TOO_LONG = "The audio modality input does not meet the requirements because: The audio file is too long."


def _open(data: bytes, accepted: tuple[str, ...], what: str) -> Any:
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError):
        raise errors.undecodable(what) from None
    names = set(container.format.name.split(","))
    if not names & set(accepted):
        container.close()
        raise errors.undecodable(f"{what} container '{container.format.name}' is not accepted")
    return container


def _duration_s(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return 0.0


def decode_video(
    data: bytes,
    policy: MediaPolicy,
    fps: float,
    rule_for: Callable[[int], ImageRule],
    stop: threading.Event | None = None,
    admit: Callable[[int], None] | None = None,
) -> Frames:
    """Frames sampled at ``fps`` (qwen-vl-utils), resized to one size chosen by ``rule_for(frame count)``.

    Each frame is resized as soon as it is decoded, so memory holds the sampled frames at their final
    size plus one decoded frame, never a full-resolution clip (docs/multimodal.md). ``stop`` abandons
    the work between two frames; ``admit(tokens)`` hears the video's token count as soon as the first
    frame gives the size, and may refuse it before the other frames are decoded.
    """
    container = _open(data, policy.video_containers, "video")
    try:
        if not container.streams.video:
            raise errors.undecodable("video (no video stream)")
        stream = container.streams.video[0]
        duration = _duration_s(container, stream)
        if duration > policy.max_video_seconds:
            raise errors.video_too_long()
        video_fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        total = stream.frames or max(1, round(duration * video_fps))
        count = sample_count(total, video_fps, fps, policy.max_video_frames)
        wanted = sample_indices(total, count)
        rule = rule_for(count)

        def sized(height: int, width: int) -> None:
            if admit is not None:  # frames merge in pairs: one pair costs one frame's tokens
                admit(count // FRAME_FACTOR * rule.tokens(height, width))

        picked = _pick_frames(container.decode(stream), wanted, rule, policy.max_image_pixels, stop, sized)
    except av.error.FFmpegError:
        raise errors.undecodable("video") from None
    finally:
        container.close()
    if not picked:
        raise errors.undecodable("video (no frames)")
    while len(picked) < count:  # the container announced more frames than it holds
        picked.append(picked[-1])
    timestamps = tuple(i / video_fps for i in wanted)
    return Frames(tuple(picked), timestamps, fps)


def _pick_frames(
    frames: Iterator[Any],
    wanted: list[int],
    rule: ImageRule,
    max_pixels: int,
    stop: threading.Event | None,
    sized: Callable[[int, int], None],
) -> list[Picture]:
    """The wanted frames (an index may repeat), each resized as it is decoded to the first one's final size."""
    targets = set(wanted)
    last_target = max(wanted)
    out: dict[int, Picture] = {}
    size: tuple[int, int] | None = None
    for index, frame in enumerate(frames):
        if stop is not None and stop.is_set():
            raise errors.Stopped()
        if index > last_target:
            break
        if index not in targets:
            continue
        if frame.width * frame.height > max_pixels:
            raise errors.too_large()
        rgb = frame.to_image()  # PyAV converts to RGB itself: another convert would copy the frame
        if size is None:  # every frame gets the first sampled frame's size (qwen-vl-utils)
            size = rule.size(rgb.height, rgb.width)
            sized(rgb.height, rgb.width)
        out[index] = image.resized(rgb, *size)
    last = None
    picked = []
    for i in wanted:  # a frame the stream lacks repeats the one before it
        last = out.get(i, last)
        if last is not None:
            picked.append(last)
    return picked


def decode_audio(
    data: bytes,
    policy: MediaPolicy,
    sample_rate: int,
    *,
    containers: tuple[str, ...] = (),
    stop: threading.Event | None = None,
) -> Clip:
    """The first audio stream as mono float32 PCM at ``sample_rate``; ``stop`` abandons it between frames."""
    container = _open(data, containers or policy.audio_containers, "audio")
    try:
        if not container.streams.audio:
            raise errors.undecodable("audio (no audio stream)")
        stream = container.streams.audio[0]
        if _duration_s(container, stream) > policy.max_audio_seconds:
            raise errors.MediaError(AUDIO_TOO_LONG)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        limit = int(policy.max_audio_seconds * sample_rate)
        parts: list[np.ndarray] = []
        size = 0
        for frame in container.decode(stream):
            if stop is not None and stop.is_set():
                raise errors.Stopped()
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
                size += parts[-1].shape[0]
            if size > limit:
                raise errors.MediaError(AUDIO_TOO_LONG)
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError:
        raise errors.undecodable("audio") from None
    finally:
        container.close()
    pcm = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if pcm.size == 0:
        raise errors.undecodable("audio (no samples)")
    return Clip(pcm.tobytes(), sample_rate)
