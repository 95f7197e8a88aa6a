"""The scheduler with media spans (pure): positions, blocking on the encoder, slices, whole-item cache reuse."""

from __future__ import annotations

from qwenhost.core.types import SamplingParams
from qwenhost.engine.llamacpp.layout import PromptLayout
from qwenhost.engine.llamacpp.scheduler import Scheduler, SchedulerConfig
from qwenhost.engine.protocol import GenerationRequest, MediaSpan

KEY = -12345


def image_prompt(prefix: int = 5, grid: tuple[int, int] = (4, 3), suffix: int = 4) -> GenerationRequest:
    """``prefix`` text tokens, an M-RoPE image of nx*ny cells, ``suffix`` text tokens."""
    nx, ny = grid
    n = nx * ny
    span = MediaSpan(prefix, n, prefix, prefix + max(nx, ny), True, KEY, prefix)
    tokens = tuple(range(1, prefix + 1)) + (KEY,) * n + tuple(range(100, 100 + suffix))
    return GenerationRequest("r", tokens, (SamplingParams(),), 4, media=(span,))


def scheduler() -> Scheduler:
    return Scheduler(
        SchedulerConfig(num_slots=2, num_pin_slots=0, batch_tokens=64, max_waiting=8, queue_timeout_s=60),
        clock=lambda: 0.0,
    )


def test_positions_advance_by_grid_not_token_count() -> None:
    layout = PromptLayout(image_prompt().media)
    assert [layout.pos_at(i) for i in range(4, 8)] == [4, 5, 5, 5]  # the image's cells share position 5
    assert layout.pos_at(17) == 9 and layout.pos_at(18) == 10  # text resumes at 5 + max(4, 3)
    assert layout.snap(10) == 5 and layout.snap(17) == 17 and layout.snap(3) == 3


def test_prefill_waits_for_the_encoder_then_decodes_the_slice() -> None:
    s = scheduler()
    s.submit(image_prompt())
    plan = s.schedule()
    assert [bt.pos for bt in plan.tokens] == [0, 1, 2, 3, 4]  # text up to the image
    assert plan.encode and not plan.media  # embeddings requested; the image must wait
    s.on_decoded(plan)
    assert not s.schedule().tokens  # blocked, nothing else to run
    s.media_ready("r", 0)
    plan = s.schedule()
    assert len(plan.media) == 1 and (plan.media[0].start, plan.media[0].stop) == (0, 12)
    assert s.on_media_decoded(plan.media[0])  # every sequence is past it: the embeddings may go
    plan = s.schedule()
    assert [bt.pos for bt in plan.tokens] == [9, 10, 11, 12]
    assert plan.tokens[-1].wants_logits


def test_cache_reuse_never_cuts_an_image() -> None:
    s = scheduler()
    group = s.submit(image_prompt())
    for seq in group.seqs:
        seq.tokens = list(image_prompt().prompt)
    s.schedule()
    s.abort("r")
    slot = s.slots[0]
    slot.tokens = list(image_prompt().prompt[:10])  # a cached prefix that ends inside the image
    again = s.submit(image_prompt())
    plan = s.schedule()
    assert again.cached_tokens == 5  # snapped back to the image start
    # the cells kept are exactly those before the image: truncated in place, or copied up to it
    assert any((op.kind == "rm" and op.p0 == 5) or (op.kind == "cp" and op.p1 == 5) for op in plan.mem_ops)
