"""Qwen-VL smart resize (spec §4.11) and the per-request pixel rules for images, frame lists and videos.

The arithmetic follows qwen-vl-utils, which DashScope's token calculator mirrors: Python's round()
(banker's rounding) for step 1, floor after a max_pixels shrink, ceil after a min_pixels growth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qwenhost.core.types import PixelDefaults
from qwenhost.media import errors

MAX_ASPECT_RATIO = 200
MIN_SIDE_PX = 10
FPS_RANGE = (0.1, 10.0)
DEFAULT_FPS = 2.0
FRAME_FACTOR = 2  # Qwen-VL merges frames in temporal pairs
MIN_FRAMES = 4
HIGH_RES_TOKENS = 16384  # vl_high_resolution_images: 16384 tokens' worth of pixels (spec §1.3 #16)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) rounded to multiples of ``factor`` with min_pixels <= area <= max_pixels."""
    if min(height, width) < MIN_SIDE_PX or max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise errors.image_size()
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True, slots=True)
class ImageRule:
    factor: int
    min_pixels: int
    max_pixels: int

    def size(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def tokens(self, height: int, width: int) -> int:
        h, w = self.size(height, width)
        return (h // self.factor) * (w // self.factor)


def image_rule(
    defaults: PixelDefaults,
    factor: int,
    *,
    min_pixels: int | None,
    max_pixels: int | None,
    high_resolution: bool,
    max_tokens: int,
) -> ImageRule:
    """The request's image limits: user values clamped to the model's bounds; the operator cap last."""
    lo = max(defaults.image_min, min_pixels or defaults.image_min)
    if high_resolution:
        hi = HIGH_RES_TOKENS * factor * factor  # max_pixels is ignored (spec §1.3 #16)
    else:
        hi = min(defaults.image_max_limit, max_pixels or defaults.image_max)
    cap = max_tokens * factor * factor
    hi = min(hi, cap)
    return ImageRule(factor, min(lo, hi), hi)


def clamp_fps(fps: float | None) -> float:
    """The sampling rate: the default, or the request's (the edge refuses values outside FPS_RANGE)."""
    if fps is None:
        return DEFAULT_FPS
    return min(max(fps, FPS_RANGE[0]), FPS_RANGE[1])


def video_rule(
    defaults: PixelDefaults,
    factor: int,
    num_frames: int,
    *,
    min_pixels: int | None,
    max_pixels: int | None,
    total_pixels: int | None,
    max_tokens: int,
) -> ImageRule:
    """Per-frame limits of a video (qwen-vl-utils fetch_video): the total budget is shared by the frames."""
    lo = max(defaults.video_min_limit, min_pixels or defaults.video_min)
    total = min(total_pixels or defaults.video_total, defaults.video_total)
    budget = max(min(defaults.video_max, total / num_frames * FRAME_FACTOR), int(lo * 1.05))
    hi = min(budget, max_pixels or budget, defaults.video_max_limit)
    hi = min(int(hi), max_tokens * factor * factor)
    return ImageRule(factor, min(lo, hi), hi)


def sample_count(total_frames: int, video_fps: float, fps: float, max_frames: int) -> int:
    """How many frames to take (qwen-vl-utils smart_nframes): ``fps`` per second, even, within bounds."""
    wanted = total_frames / video_fps * fps if video_fps > 0 else total_frames
    upper = max(FRAME_FACTOR, math.floor(min(max_frames, total_frames) / FRAME_FACTOR) * FRAME_FACTOR)
    n = min(max(wanted, MIN_FRAMES), upper, total_frames)
    return max(FRAME_FACTOR, math.floor(n / FRAME_FACTOR) * FRAME_FACTOR)


def sample_indices(total_frames: int, count: int) -> list[int]:
    """Evenly spaced frame indices, first and last included (torch.linspace(...).round())."""
    if count <= 1:
        return [0]
    step = (total_frames - 1) / (count - 1)
    return [min(total_frames - 1, round(i * step)) for i in range(count)]
