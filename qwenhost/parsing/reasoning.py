"""Incremental reasoning splitter: the thought becomes ReasoningDeltas, the answer goes to an inner parser.

Rules of spec §6.3 and §6.5: a thought opens with the think tag at the very start of the output (or
already in the prompt, for the templates that end with ``<think>\\n``) and ends at the first close tag;
newlines around the thought and right after the close tag are dropped; with no close tag (a
truncated thought) everything is reasoning. Text is held back only while it could still be part of
a tag or trailing newlines of the thought, so the folded result never depends on how text is split.
"""

from __future__ import annotations

from enum import Enum

from qwenhost.core.events import ChatEvent, ReasoningDelta
from qwenhost.parsing.base import OutputParser, partial_suffix


class Phase(Enum):
    OPENING = "opening"  # start of output: a thought may open here
    THOUGHT = "thought"
    AFTER_THOUGHT = "after_thought"  # the close tag was seen; newlines before the answer are dropped
    ANSWER = "answer"


class ReasoningParser:
    """Splits one choice's output into reasoning and answer; the answer is fed to ``inner``."""

    def __init__(
        self,
        choice: int,
        inner: OutputParser,
        *,
        starts_inside: bool,
        open_tag: str = "<think>",
        close_tag: str = "</think>",
    ) -> None:
        self.choice = choice
        self.inner = inner
        self._open = open_tag
        self._close = close_tag
        self._phase = Phase.THOUGHT if starts_inside else Phase.OPENING
        self._held = ""  # text not yet attributed: a possible tag prefix or trailing newlines
        self._thought_started = False  # a non-newline character of the thought was emitted

    @property
    def is_reasoning(self) -> bool:
        return self._phase is Phase.THOUGHT

    @property
    def num_tool_calls(self) -> int:
        return self.inner.num_tool_calls

    def feed(self, text: str) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        self._held += text
        while self._held:
            before = (self._phase, len(self._held))
            events += self._step()
            if (self._phase, len(self._held)) == before:
                break  # waiting for more text
        return events

    def finish(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        held, self._held = self._held, ""
        if self._phase is Phase.OPENING:
            events += self.inner.feed(held)  # a prefix of the open tag that never completed is answer text
        elif self._phase is Phase.THOUGHT:
            events += self._reasoning(held.rstrip("\n"))  # truncated thought: all of it is reasoning
        elif self._phase is Phase.ANSWER:
            events += self.inner.feed(held)
        return events + self.inner.finish()

    # -- phases -----------------------------------------------------------------------------------
    def _step(self) -> list[ChatEvent]:
        if self._phase is Phase.OPENING:
            return self._opening()
        if self._phase is Phase.THOUGHT:
            return self._thought()
        if self._phase is Phase.AFTER_THOUGHT:
            stripped = self._held.lstrip("\n")
            if stripped:
                self._phase, self._held = Phase.ANSWER, stripped
            else:
                self._held = ""
            return []
        held, self._held = self._held, ""
        return self.inner.feed(held)

    def _opening(self) -> list[ChatEvent]:
        if self._held.startswith(self._open):
            self._held = self._held[len(self._open) :]
            self._phase = Phase.THOUGHT
        elif not self._open.startswith(self._held):
            self._phase = Phase.ANSWER  # the model answered without thinking
        return []

    def _thought(self) -> list[ChatEvent]:
        held = self._held
        cut = held.find(self._close)
        if cut >= 0:
            self._held = held[cut + len(self._close) :]
            self._phase = Phase.AFTER_THOUGHT
            return self._reasoning(held[:cut].rstrip("\n"))
        keep = partial_suffix(held, self._close)
        body = held[: len(held) - keep]
        ready = body.rstrip("\n")  # trailing newlines may end the thought: hold them until more text comes
        self._held = held[len(ready) :]
        return self._reasoning(ready)

    def _reasoning(self, text: str) -> list[ChatEvent]:
        if not self._thought_started:
            text = text.lstrip("\n")
        if not text:
            return []
        self._thought_started = True
        return [ReasoningDelta(self.choice, text)]
