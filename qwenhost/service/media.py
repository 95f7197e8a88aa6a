"""Media parts of a request -> decoded pixels and samples at their final size (fetch, decode, smart resize).

Runs before the prompt is built: every media error (too many parts, bad URL, too large, too long, wrong
frame count, undecodable) is a 400 raised before the first byte. Each part is fetched on the event loop
and decoded on the pipeline's own decoder threads (no Pillow or PyAV call runs on the loop); the parts
run side by side, and the first failure stops the others at once and is the request's answer.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import ChatRequest, MediaPart
from qwenhost.engine.protocol import MediaCapabilities
from qwenhost.formats.vision import VisionFamily, vision_family
from qwenhost.media import av_decode, errors
from qwenhost.media.decoded import Clip, Picture
from qwenhost.media.fetch import ByteBudget, Fetcher
from qwenhost.media.image import load_picture, open_image, resized
from qwenhost.media.oss import ObjectSource
from qwenhost.media.policy import MediaPolicy
from qwenhost.media.resize import (
    FRAME_FACTOR,
    MIN_FRAMES,
    ImageRule,
    clamp_fps,
    image_rule,
    video_rule,
)
from qwenhost.service.models import ServedModel
from qwenhost.service.plan import input_limit

_NOUNS = {"image": "image", "video": "video", "video_frames": "video", "audio": "audio"}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DecodedPart:
    """One media part ready for the prompt: pictures (1 for an image, an even count for a video) or a clip."""

    kind: str
    pictures: tuple[Picture, ...] = ()
    timestamps: tuple[float, ...] = ()
    fps: float = 2.0
    clip: Clip | None = field(default=None)


class MediaPipeline:
    def __init__(self, policy: MediaPolicy, objects: ObjectSource | None = None) -> None:
        self.policy = policy
        self.fetcher = Fetcher(policy, objects=objects)  # objects: the upload store oss:// URLs read
        # Its own threads: a request with hundreds of frames must not queue ahead of every other
        # request's work in asyncio's default executor.
        self._decoders = ThreadPoolExecutor(policy.max_concurrent_decodes, thread_name_prefix="qwenhost-media")

    def check_supported(self, request: ChatRequest, model: ServedModel) -> None:
        """The checks that need no fetch: modality support, frame-list length, the per-request part count.

        A text-only model (or one whose projector lacks the modality) answers a media part with a 400.
        """
        caps = model.backend.info.media
        parts = [p for m in request.messages for p in m.media]
        for part in parts:
            needs_audio = part.kind == "audio"
            if caps is None or (caps.audio_projector if needs_audio else caps.vision_projector) is None:
                # DashScope's text first (spec §3.3: media sent to a text-only model), then how to fix it.
                raise InvalidParameter(
                    f"input content must be a string. The model `{request.model}` does not support "
                    f"{_NOUNS[part.kind]} input: serve a multimodal model with its projector (--mmproj) to send media."
                )
            if part.kind == "video_frames":
                family = vision_family(caps.vision_projector or "")
                if not MIN_FRAMES <= len(part.sources) <= family.pixels.max_frames:
                    raise errors.frame_range(family.pixels.max_frames)
        items = sum(len(p.sources) for p in parts)
        if items > self.policy.max_media_parts:
            raise errors.too_many_parts(items, self.policy.max_media_parts)

    async def decode(self, request: ChatRequest, model: ServedModel) -> list[DecodedPart]:
        """Every media part fetched and decoded, in request order; the first failure cancels the rest."""
        self.check_supported(request, model)
        caps = model.backend.info.media
        assert caps is not None  # check_supported refused media on a text-only model
        job = _Job(
            request, caps, ByteBudget(self.policy.max_media_bytes), _Cells(input_limit(request, model.max_input_tokens))
        )
        parts = [p for m in request.messages for p in m.media]
        try:
            return await job.siblings.run([self._part(job, part) for part in parts])
        finally:
            job.siblings.stop.set()  # decoder threads still at work (a part failed, the client left) give up

    async def _part(self, job: _Job, part: MediaPart) -> DecodedPart:
        kind = "image" if part.kind == "video_frames" else part.kind
        oss = job.request.resolve_oss
        blobs = await job.siblings.run(
            [self.fetcher.fetch(src, kind, job.bytes, resolve_oss=oss) for src in part.sources]
        )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decoders, self._decode_part, job, part, blobs)

    def _decode_part(self, job: _Job, part: MediaPart, data: list[bytes]) -> DecodedPart:
        """One part's pixels or samples at their final size (a decoder thread: Pillow and PyAV run here)."""
        stop = job.siblings.stop
        if stop.is_set():
            raise errors.Stopped()
        if part.kind == "audio":
            clip = av_decode.decode_audio(data[0], self.policy, job.caps.audio_sample_rate, stop=stop)
            return DecodedPart("audio", clip=clip)
        family = vision_family(job.caps.vision_projector or "")
        factor = job.caps.pixels_per_token_side
        if part.kind != "image":
            return self._video(job, part, data, family, factor)
        rule = image_rule(
            family.pixels,
            factor,
            min_pixels=part.min_pixels,
            max_pixels=part.max_pixels,
            high_resolution=job.request.vl_high_resolution_images,
            max_tokens=self.policy.max_image_tokens,
        )
        return DecodedPart("image", (load_picture(data[0], rule, self.policy.max_image_pixels, job.cells.charge),))

    def _video(self, job: _Job, part: MediaPart, data: list[bytes], family: VisionFamily, factor: int) -> DecodedPart:
        fps = clamp_fps(part.fps)
        stop = job.siblings.stop

        def rule_for(num_frames: int) -> ImageRule:
            return video_rule(
                family.pixels,
                factor,
                num_frames,
                min_pixels=part.min_pixels,
                max_pixels=part.max_pixels,
                total_pixels=part.total_pixels,
                max_tokens=self.policy.max_image_tokens,
            )

        if part.kind == "video":
            frames = av_decode.decode_video(data[0], self.policy, fps, rule_for, stop, job.cells.charge)
            return DecodedPart("video", frames.pictures, frames.timestamps, fps)
        count = math.ceil(len(data) / FRAME_FACTOR) * FRAME_FACTOR
        rule = rule_for(count)

        def admit(height: int, width: int) -> None:  # frames merge in pairs: one pair costs one frame's tokens
            job.cells.charge(count // FRAME_FACTOR * rule.tokens(height, width))

        pictures = _frame_list(data, rule, self.policy.max_image_pixels, stop, admit)
        pictures += [pictures[-1]] * (count - len(pictures))  # pairs: the last frame repeats (qwen-vl-utils)
        return DecodedPart("video_frames", tuple(pictures), tuple(i / fps for i in range(count)), fps)

    async def close(self) -> None:
        await self.fetcher.close()
        self._decoders.shutdown(wait=False, cancel_futures=True)


def _frame_list(
    data: list[bytes], rule: ImageRule, max_pixels: int, stop: threading.Event, admit: Callable[[int, int], None]
) -> list[Picture]:
    """A frame list's images, each resized as it is decoded to the first one's final size."""
    first = open_image(data[0], max_pixels, admit)
    height, width = rule.size(first.height, first.width)
    pictures = [resized(first, height, width)]
    del first  # only final-size pictures stay in memory
    for blob in data[1:]:
        if stop.is_set():
            raise errors.Stopped()
        pictures.append(resized(open_image(blob, max_pixels), height, width))
    return pictures


class _Cells:
    """The prompt tokens a request's media may fill: past the input limit the prompt is refused anyway, so
    the media is refused from its headers, before the pixels are decoded (this bounds decoded memory)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()  # a request's parts decode on several threads at once

    def charge(self, tokens: int) -> None:
        with self._lock:
            self.used += tokens
            if self.used > self.limit:
                raise errors.input_too_long(self.limit)


class _Siblings:
    """Work that succeeds together or fails as one: the first failure cancels the rest and is raised.

    Shared by nested groups (the parts of a request, the frames of a part), so "first" is first in time
    across all of them; ``stop`` tells decoder threads, which cannot be cancelled, to give up.
    """

    def __init__(self) -> None:
        self.first: Exception | None = None
        self.stop = threading.Event()

    async def run(self, work: Sequence[Awaitable[T]]) -> list[T]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._watched(w)) for w in work]
        except BaseExceptionGroup:
            if self.first is not None:
                raise self.first from None
            raise
        return [t.result() for t in tasks]

    async def _watched(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except Exception as exc:
            if self.first is None:
                self.first = exc
                self.stop.set()
            raise


@dataclass(frozen=True, slots=True)
class _Job:
    """What one request's parts share while they are fetched and decoded."""

    request: ChatRequest
    caps: MediaCapabilities
    bytes: ByteBudget
    cells: _Cells
    siblings: _Siblings = field(default_factory=_Siblings)
