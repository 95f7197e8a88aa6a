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
