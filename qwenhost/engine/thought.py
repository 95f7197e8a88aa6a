"""Per-sequence thought tracking on token ids: counts thought tokens, says when to force the close tag
and when the answer has used its tokens. Engine-neutral; a backend calls it once per sampled token."""

from __future__ import annotations

from enum import Enum

from qwenhost.engine.protocol import ReasoningBudget


class ThoughtPhase(Enum):
    OPENING = "opening"  # the output may still open a thought
    THOUGHT = "thought"
    ANSWER = "answer"


class ThoughtTracker:
    """Mirrors parsing/reasoning.py on token ids. A thought opens only at the very start of the output
    (or in the prompt) and ends at the first close sequence. Thought tokens are those the parser reads
    while inside the thought and is still inside after — the service's reasoning_tokens — so forcing
    the close once ``budget`` of them were generated keeps reasoning_tokens <= budget."""

    def __init__(self, spec: ReasoningBudget) -> None:
        self.spec = spec
        self.phase = ThoughtPhase.THOUGHT if spec.open_at_start else ThoughtPhase.OPENING
        self.num_thought_tokens = 0
        self.num_answer_tokens = 0
        self._recent: tuple[int, ...] = ()  # the last tokens, to spot a tag that spans several tokens
        self._num_seen = 0
        self._is_close_forced = False
        self._has_answer_text = False
        # A multi-token close tag's leading tokens count as thought; force it early enough to fit.
        self._force_at = None if spec.budget is None else max(1, spec.budget - (len(spec.close_tokens) - 1))

    def on_token(self, token: int, piece: bytes) -> list[int]:
        """Record one generated token; returns the tokens the engine must force next (usually none)."""
        self._num_seen += 1
        keep = max(len(self.spec.close_tokens), len(self.spec.open_tokens), 1)
        self._recent = (*self._recent, token)[-keep:]
        if self.phase is ThoughtPhase.OPENING:
            self._opening(piece)
            return []
        if self.phase is ThoughtPhase.ANSWER:
            self._count_answer(piece)
            return []
        if self._ends_with(self.spec.close_tokens):
            self.phase = ThoughtPhase.ANSWER
            return []
        self.num_thought_tokens += 1
        if self._force_at is not None and self.num_thought_tokens >= self._force_at and not self._is_close_forced:
            self._is_close_forced = True
            return list(self.spec.close_tokens)
        return []

    @property
    def is_answer_done(self) -> bool:
        """max_tokens bounds only the answer (spec §1.3 #14): true once the answer has used them all."""
        limit = self.spec.max_answer_tokens
        return limit is not None and self.phase is ThoughtPhase.ANSWER and self.num_answer_tokens >= limit

    def _opening(self, piece: bytes) -> None:
        opening = self.spec.open_tokens
        n = self._num_seen
        if opening and n <= len(opening) and self._recent[-n:] == opening[:n]:
            if n == len(opening):
                self.phase = ThoughtPhase.THOUGHT
            return
        self.phase = ThoughtPhase.ANSWER  # the model answered without opening a thought
        self._has_answer_text = True  # nothing was stripped: every token so far is answer
        self.num_answer_tokens = n

    def _count_answer(self, piece: bytes) -> None:
        # The newlines that separate the closed thought from the answer are not answer (the parser drops them).
        if not self._has_answer_text and not piece.strip(b"\n"):
            return
        self._has_answer_text = True
        self.num_answer_tokens += 1

    def _ends_with(self, tail: tuple[int, ...]) -> bool:
        return bool(tail) and self._recent[-len(tail) :] == tail
