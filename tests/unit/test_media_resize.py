"""Smart resize (spec §4.11) and the per-request pixel rules, against the spec's arithmetic."""

from __future__ import annotations

import math
import re

import pytest

from qwenhost.core.errors import InvalidParameter
from qwenhost.formats.vision import QWEN2_5_VL, QWEN3_VL
from qwenhost.media.resize import image_rule, sample_count, sample_indices, smart_resize, video_rule


def spec_resize(h: int, w: int, f: int, lo: int, hi: int) -> tuple[int, int]:
    """Spec §4.11 steps 1-3, written out independently of the implementation."""
    hh, ww = max(f, round(h / f) * f), max(f, round(w / f) * f)
    if hh * ww > hi:
        b = math.sqrt(h * w / hi)
        hh, ww = max(f, math.floor(h / b / f) * f), max(f, math.floor(w / b / f) * f)
    elif hh * ww < lo:
        b = math.sqrt(lo / (h * w))
        hh, ww = math.ceil(h * b / f) * f, math.ceil(w * b / f) * f
    return hh, ww


SIDES = [
    (h, w) for h in (10, 37, 224, 480, 1080, 4000) for w in (10, 99, 640, 1920, 3000) if max(h, w) / min(h, w) <= 200
]  # more elongated images are refused: test_too_small_or_elongated


@pytest.mark.parametrize("factor", [28, 32])
@pytest.mark.parametrize(("h", "w"), SIDES)
def test_grid_matches_spec(factor: int, h: int, w: int) -> None:
    lo, hi = 4 * factor * factor, 1280 * factor * factor
    got = smart_resize(h, w, factor, lo, hi)
    assert got == spec_resize(h, w, factor, lo, hi)
    assert got[0] % factor == 0 and got[1] % factor == 0
    assert lo <= got[0] * got[1] <= hi or got[0] * got[1] < lo * 2  # ceil may overshoot only slightly


def test_seed_example_sizes() -> None:
    # 2048x1365 at Qwen2.5-VL defaults: shrunk under 1003520 pixels (1280 tokens of 28x28).
    h, w = smart_resize(1365, 2048, 28, 3136, 1003520)
    assert (h, w) == (812, 1204) and h * w <= 1003520 and (h // 28) * (w // 28) == 1247


@pytest.mark.parametrize(("h", "w"), [(9, 100), (100, 9), (10, 2001), (2001, 10)])
def test_too_small_or_elongated(h: int, w: int) -> None:
    with pytest.raises(
        InvalidParameter, match=re.escape("The image length and width do not meet the model restrictions.")
    ):
        smart_resize(h, w, 28, 3136, 1003520)


def test_image_rule_clamps_and_high_resolution() -> None:
    d = QWEN3_VL.pixels
    rule = image_rule(d, 32, min_pixels=1, max_pixels=10**12, high_resolution=False, max_tokens=16384)
    assert rule.min_pixels == QWEN3_VL.pixels.image_min and rule.max_pixels == QWEN3_VL.pixels.image_max_limit
    hi = image_rule(d, 32, min_pixels=None, max_pixels=100_000, high_resolution=True, max_tokens=16384)
    assert hi.max_pixels == 16384 * 32 * 32  # vl_high_resolution_images ignores max_pixels
    capped = image_rule(d, 32, min_pixels=None, max_pixels=None, high_resolution=True, max_tokens=100)
    assert capped.max_pixels == 100 * 32 * 32


def test_video_rule_shares_total_pixels() -> None:
    d = QWEN2_5_VL.pixels
    few = video_rule(d, 28, 4, min_pixels=None, max_pixels=None, total_pixels=None, max_tokens=16384)
    many = video_rule(d, 28, 400, min_pixels=None, max_pixels=None, total_pixels=None, max_tokens=16384)
    assert few.max_pixels == QWEN2_5_VL.pixels.video_max
    assert many.max_pixels == max(int(QWEN2_5_VL.pixels.video_total / 400 * 2), int(QWEN2_5_VL.pixels.video_min * 1.05))


def test_frame_sampling() -> None:
    assert sample_count(100, 10.0, 2.0, 768) == 20  # 10 s at 2 fps
    assert sample_count(10, 10.0, 0.1, 768) == 4  # at least 4 frames
    assert sample_count(7, 10.0, 10.0, 768) == 6  # even, no more than there are
    assert sample_indices(10, 4) == [0, 3, 6, 9]
