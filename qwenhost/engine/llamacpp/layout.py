"""Where a multimodal prompt's media spans sit: prompt index -> KV position, span lookup, cache snapping.

Pure (no llama_cpp): the scheduler asks it for positions because with M-RoPE an image's cells share
one position and the text after it resumes at ``next_pos`` — positions and cell counts diverge.
"""

from __future__ import annotations

from bisect import bisect_right

from qwenhost.engine.protocol import MediaSpan


class PromptLayout:
    __slots__ = ("_unit_end", "offsets", "spans")

    def __init__(self, spans: tuple[MediaSpan, ...]) -> None:
        self.spans = spans
        self.offsets = [s.offset for s in spans]
        self._unit_end: dict[int, int] = {}
        for s in spans:
            self._unit_end[s.unit_offset] = max(self._unit_end.get(s.unit_offset, 0), s.end)

    def pos_at(self, index: int) -> int:
        """The KV position of prompt (or generated) cell ``index``."""
        k = bisect_right(self.offsets, index) - 1
        if k < 0:
            return index
        span = self.spans[k]
        if index < span.end:
            return span.pos if span.is_flat else span.pos + (index - span.offset)
        return span.next_pos + (index - span.end)

    def span_at(self, index: int) -> int | None:
        """The span holding cell ``index``, or the first span after it; None when none is left."""
        k = bisect_right(self.offsets, index) - 1
        if k >= 0 and index < self.spans[k].end:
            return k
        return k + 1 if k + 1 < len(self.spans) else None

    def snap(self, length: int) -> int:
        """The longest reusable prefix not longer than ``length`` that does not cut a media item."""
        k = bisect_right(self.offsets, length - 1) - 1
        if k < 0:
            return length
        span = self.spans[k]
        if span.unit_offset < length < self._unit_end[span.unit_offset]:
            return span.unit_offset
        return length
