"""Media parts of a request -> decoded pixels and samples at their final size (fetch, decode, smart resize).

Runs before the prompt is built: every media error (bad URL, too large, too long, wrong frame count,
undecodable) is a 400 raised before the first byte. Fetching is async; decoding runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import ChatRequest, MediaPart
from qwenhost.formats.vision import VisionFamily, vision_family
from qwenhost.media import av_decode, errors
from qwenhost.media.decoded import Clip, Picture
from qwenhost.media.fetch import Fetcher
from qwenhost.media.image import load_picture, open_image, resized
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

_NOUNS = {"image": "image", "video": "video", "video_frames": "video", "audio": "audio"}


@dataclass(frozen=True, slots=True)
class DecodedPart:
    """One media part ready for the prompt: pictures (1 for an image, an even count for a video) or a clip."""

    kind: str
    pictures: tuple[Picture, ...] = ()
    timestamps: tuple[float, ...] = ()
    fps: float = 2.0
    clip: Clip | None = field(default=None)


class MediaPipeline:
    def __init__(self, policy: MediaPolicy) -> None:
        self.policy = policy
        self.fetcher = Fetcher(policy)

    def check_supported(self, request: ChatRequest, model: ServedModel) -> None:
        """A text-only model (or one whose projector lacks the modality) answers a media part with a 400."""
        caps = model.backend.info.media
        for part in (p for m in request.messages for p in m.media):
            needs_audio = part.kind == "audio"
            if caps is None or (caps.audio_projector if needs_audio else caps.vision_projector) is None:
                raise InvalidParameter(
                    f"The model `{request.model}` does not support {_NOUNS[part.kind]} input: "
                    "serve a multimodal model with its projector (--mmproj) to send media."
                )
            if part.kind == "video_frames":
                family = vision_family(caps.vision_projector or "")
                if not MIN_FRAMES <= len(part.sources) <= family.pixels.max_frames:
                    raise errors.frame_range(family.pixels.max_frames)

    async def decode(self, request: ChatRequest, model: ServedModel) -> list[DecodedPart]:
        self.check_supported(request, model)
        parts = [p for m in request.messages for p in m.media]
        fetches = [
            self.fetcher.fetch(src, "image" if p.kind == "video_frames" else p.kind) for p in parts for src in p.sources
        ]
        blobs = await asyncio.gather(*fetches)
        return await asyncio.to_thread(self._decode_all, request, model, parts, list(blobs))

    def _decode_all(
        self, request: ChatRequest, model: ServedModel, parts: list[MediaPart], blobs: list[bytes]
    ) -> list[DecodedPart]:
        caps = model.backend.info.media
        assert caps is not None
        family = vision_family(caps.vision_projector or "")
        out = []
        cursor = 0
        for part in parts:
            data = blobs[cursor : cursor + len(part.sources)]
            cursor += len(part.sources)
            if part.kind == "audio":
                out.append(
                    DecodedPart("audio", clip=av_decode.decode_audio(data[0], self.policy, caps.audio_sample_rate))
                )
                continue
            factor = caps.pixels_per_token_side
            if part.kind == "image":
                rule = image_rule(
                    family.pixels,
                    factor,
                    min_pixels=part.min_pixels,
                    max_pixels=part.max_pixels,
                    high_resolution=request.vl_high_resolution_images,
                    max_tokens=self.policy.max_image_tokens,
                )
                out.append(DecodedPart("image", (load_picture(data[0], rule, self.policy.max_image_pixels),)))
            else:
                out.append(self._video(part, data, family, factor))
        return out

    def _video(self, part: MediaPart, data: list[bytes], family: VisionFamily, factor: int) -> DecodedPart:
        fps = clamp_fps(part.fps)

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
            frames = av_decode.decode_video(data[0], self.policy, fps, rule_for)
            return DecodedPart("video", frames.pictures, frames.timestamps, fps)
        images = [open_image(blob, self.policy.max_image_pixels) for blob in data]
        count = math.ceil(len(images) / FRAME_FACTOR) * FRAME_FACTOR
        images += [images[-1]] * (count - len(images))  # pairs: the last frame repeats (qwen-vl-utils)
        height, width = rule_for(count).size(images[0].height, images[0].width)
        pictures = tuple(resized(img, height, width) for img in images)
        return DecodedPart("video_frames", pictures, tuple(i / fps for i in range(count)), fps)

    async def close(self) -> None:
        await self.fetcher.close()
