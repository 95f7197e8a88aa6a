"""Vision/audio projector families as data: pixel limits, video timing and placeholder tokens.

Keyed by the mmproj's ``clip.projector_type`` (llama.cpp names). Pixels per token come from the
GGUF (patch size x merge size: 28 for Qwen2/2.5-VL, 32 for Qwen3-VL); the limits are DashScope's
(spec §4.11) for the matching hosted family.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from qwenhost.core.types import PixelDefaults

# How a video's frame pairs are placed in time (HF processors):
#   index       Qwen2-VL: temporal position = pair index
#   seconds     Qwen2.5-VL / Qwen2.5-Omni: pair index x (2 / fps) x tokens_per_second (absolute time)
#   timestamps  Qwen3-VL: every pair is its own image, preceded by "<t seconds>" text
VideoTime = Literal["index", "seconds", "timestamps"]


@dataclass(frozen=True, slots=True)
class VisionFamily:
    name: str
    pixels: PixelDefaults  # spec §4.11 defaults and the bounds a request may move them to
    video_time: VideoTime = "seconds"
    tokens_per_second: float = 2.0  # Qwen2.5-VL vision_config.tokens_per_second; not stored in mmproj GGUFs


# "Others" in spec §4.11: Qwen2/2.5-VL, QVQ (28 px per token).
QWEN2_VL = VisionFamily(
    name="qwen2-vl",
    pixels=PixelDefaults(
        image_min=3136,
        image_max=1003520,
        image_max_limit=12845056,
        video_min=50176,
        video_min_limit=3136,
        video_max=501760,
        video_max_limit=602112,
        video_total=51380224,
        max_frames=80,
    ),
    video_time="index",
)
QWEN2_5_VL = replace(QWEN2_VL, name="qwen2.5-vl", pixels=replace(QWEN2_VL.pixels, max_frames=512), video_time="seconds")
# Qwen2.5-Omni places video in time at 25 positions per second (position_id_per_seconds).
QWEN2_5_OMNI = replace(QWEN2_5_VL, name="qwen2.5-omni", tokens_per_second=25.0)
QWEN3_VL = VisionFamily(
    name="qwen3-vl",
    pixels=PixelDefaults(
        image_min=65536,
        image_max=2621440,
        image_max_limit=16777216,
        video_min=65536,
        video_min_limit=4096,
        video_max=655360,
        video_max_limit=786432,
        video_total=67108864,
        max_frames=512,
    ),
    video_time="timestamps",
)

VISION_FAMILIES: dict[str, VisionFamily] = {
    "qwen2vl_merger": QWEN2_VL,
    "qwen2.5vl_merger": QWEN2_5_VL,
    "qwen2.5o": QWEN2_5_OMNI,
    "qwen3vl_merger": QWEN3_VL,
}


def vision_family(projector: str) -> VisionFamily:
    """The family of a vision projector; other projectors get Qwen2.5-VL's limits (mtmd sizes them)."""
    return VISION_FAMILIES.get(projector, QWEN2_5_VL)


@dataclass(frozen=True, slots=True)
class Placeholders:
    """Special tokens around media cells; the first spelling present in the vocabulary wins."""

    vision: tuple[tuple[str, str], ...] = (("<|vision_start|>", "<|vision_end|>"), ("<|vision_bos|>", "<|vision_eos|>"))
    audio: tuple[tuple[str, str], ...] = (("<|audio_start|>", "<|audio_end|>"), ("<|audio_bos|>", "<|audio_eos|>"))

    @staticmethod
    def pick(options: tuple[tuple[str, str], ...], vocabulary: set[str] | frozenset[str]) -> tuple[str, str]:
        for begin, end in options:
            if begin in vocabulary and end in vocabulary:
                return begin, end
        return options[0]


PLACEHOLDERS = Placeholders()
