"""Sequence and group state: one choice's tokens and KV placement, one request's ``n`` choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from qwenhost.engine.llamacpp.layout import PromptLayout
from qwenhost.engine.protocol import GenerationRequest

MediaState = Literal["pending", "ready"]


class SeqState(Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One choice of one request: the tokens it holds and where they live in the KV cache."""

    group: Group
    choice: int
    tokens: list[int]
    num_prompt: int
    slot: int = -1
    num_computed: int = 0
    state: SeqState = SeqState.WAITING

    @property
    def is_follower(self) -> bool:
        """Followers share the leader's prompt prefill (n > 1) and wait for its last logits row."""
        return self.choice > 0 and not self.group.is_prompt_split

    @property
    def is_prompt_computed(self) -> bool:
        """Every prompt cell is in the KV cache and the first token is still to be sampled."""
        return self.state is SeqState.PREFILL and self.num_computed >= len(self.tokens)


@dataclass(eq=False)
class Group:
    """A request: n sequences that share one prompt."""

    request: GenerationRequest
    arrived_s: float
    seqs: list[Sequence] = field(default_factory=list)
    cached_tokens: int = 0
    is_prompt_split: bool = False  # after a preemption the choices prefill on their own
    is_prompt_reported: bool = False
    was_admitted: bool = False
    layout: PromptLayout | None = None  # only for prompts with media spans
    media_state: dict[int, MediaState] = field(default_factory=dict)  # span index -> state

    @classmethod
    def of(cls, request: GenerationRequest, arrived_s: float) -> Group:
        group = cls(request=request, arrived_s=arrived_s)
        if request.media:
            group.layout = PromptLayout(request.media)
        prompt = list(request.prompt)
        group.seqs = [Sequence(group, choice, list(prompt), len(prompt)) for choice in range(request.n)]
        return group

    def pos_at(self, index: int) -> int:
        return index if self.layout is None else self.layout.pos_at(index)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def salt(self) -> str:
        """Cached prefixes are shared only between requests with the same salt."""
        return self.request.cache_salt

    @property
    def is_done(self) -> bool:
        return all(s.state is SeqState.FINISHED for s in self.seqs)

    def waiting_seqs(self) -> list[Sequence]:
        return [s for s in self.seqs if s.state is SeqState.WAITING]
