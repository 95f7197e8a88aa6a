"""The OutputParser protocol (model text -> ChatEvents, incremental only) and the plain-text parser."""

from __future__ import annotations

from typing import Protocol

from qwenhost.core.events import ChatEvent, ContentDelta


class OutputParser(Protocol):
    """``feed()`` any split of the text, then ``finish()``; the folded events must not depend on the split."""

    def feed(self, text: str) -> list[ChatEvent]: ...

    def finish(self) -> list[ChatEvent]: ...

    @property
    def is_reasoning(self) -> bool:
        """True while the text being fed belongs to the thought."""

    @property
    def num_tool_calls(self) -> int: ...


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``: what an incremental
    parser must hold back because the next text may complete the tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class PlainParser:
    """Every character is answer content."""

    def __init__(self, choice: int) -> None:
        self.choice = choice

    def feed(self, text: str) -> list[ChatEvent]:
        return [ContentDelta(self.choice, text)] if text else []

    def finish(self) -> list[ChatEvent]:
        return []

    @property
    def is_reasoning(self) -> bool:
        return False

    @property
    def num_tool_calls(self) -> int:
        return 0
