"""The step plan: the memory operations, batch tokens and media slices of one engine step."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from qwenhost.engine.llamacpp.sequence import Group, Sequence


@dataclass(frozen=True, slots=True)
class MemOp:
    """``rm``: drop positions [p0, p1) of ``dst``; ``cp``: give ``dst`` the cells [p0, p1) of ``src``."""

    kind: Literal["rm", "cp"]
    dst: int
    src: int = -1
    p0: int = 0
    p1: int = -1


@dataclass(slots=True)
class BatchToken:
    token: int
    pos: int
    seq_ids: tuple[int, ...]
    wants_logits: bool
    owner: Sequence | None = None  # the sequence that samples from this row (leaders sample for followers)


@dataclass(slots=True)
class MediaSlice:
    """Rows [start, stop) of span ``index``'s embeddings, decoded in their own batch after the text batch."""

    group: Group
    index: int
    start: int
    stop: int
    members: list[Sequence]

    @property
    def seq_ids(self) -> tuple[int, ...]:
        return tuple(s.slot for s in self.members)


@dataclass(slots=True)
class StepPlan:
    mem_ops: list[MemOp] = field(default_factory=list)
    tokens: list[BatchToken] = field(default_factory=list)
    admitted: list[Group] = field(default_factory=list)
    expired: list[Group] = field(default_factory=list)
    advances: list[tuple[Sequence, int]] = field(default_factory=list)  # num_computed after the text batch
    media: list[MediaSlice] = field(default_factory=list)
    replay: list[Group] = field(default_factory=list)  # whole prompt reused: sample from kept logits
    encode: list[tuple[Group, int]] = field(default_factory=list)  # spans whose embeddings are wanted

    def batch_groups(self) -> list[Group]:
        """The requests with text in this step's batch (prefill chunks included), once each."""
        return _unique(seq.group for seq, _ in self.advances)

    def groups(self) -> list[Group]:
        """Every request this step touches, once each: a failure of the whole step concerns them."""
        return _unique([*self.admitted, *self.replay, *(m.group for m in self.media), *self.batch_groups()])


def _unique(groups: Iterable[Group]) -> list[Group]:
    return list({id(g): g for g in groups}.values())
