"""The ChatEvent stream that every answer is made of, and fold(): the only code that assembles messages.

A chat answer is produced once, as events; streaming renders each event as a chunk and
non-streaming renders ``fold(events)`` (ARCHITECTURE.md, convention 1).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qwenhost.core.types import FinishReason, TokenLogprob, ToolCall, Usage


@dataclass(frozen=True, slots=True)
class RoleStart:
    choice: int
    is_thinking: bool = False  # thinking streams open with reasoning_content:"" (spec §2.4)


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    choice: int
    text: str


@dataclass(frozen=True, slots=True)
class ContentDelta:
    choice: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """A piece of the spoken answer: PCM16 mono 24 kHz, a multiple of 6 bytes (spec §4.10). Streaming only:
    the folded answer has no audio (DashScope's non-streaming ``message.audio`` is always null)."""

    choice: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    choice: int
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArgsDelta:
    choice: int
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    choice: int
    reason: FinishReason


@dataclass(frozen=True, slots=True)
class UsageReport:
    usage: Usage


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Nothing to say yet (a server-side tool is running): a stream writes an SSE comment so that proxies and
    clients keep the connection, and writing it notices a client that left. The folded answer ignores it."""


@dataclass(frozen=True, slots=True)
class ToolReport:
    """What one run of a server-side tool may show a dialect (service/tool_loop.py): compatible mode shows
    nothing (spec §4.8, §4.9); the native protocol reads search results from ``info``."""

    name: str  # the reserved tool (``search``, ``code_interpreter``)
    info: Mapping[str, Any]


ChatEvent = (
    RoleStart
    | ReasoningDelta
    | ContentDelta
    | AudioDelta
    | ToolCallStart
    | ToolCallArgsDelta
    | Finish
    | UsageReport
    | KeepAlive
    | ToolReport
)


@dataclass(slots=True)
class FoldedChoice:
    index: int
    content: str = ""
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class FoldedAnswer:
    choices: list[FoldedChoice]
    usage: Usage | None = None
    tool_reports: list[ToolReport] = field(default_factory=list)


class _Folder:
    def __init__(self) -> None:
        self.choices: dict[int, FoldedChoice] = {}
        self.usage: Usage | None = None
        self.tool_reports: list[ToolReport] = []
        self._content: dict[int, list[str]] = {}
        self._reasoning: dict[int, list[str]] = {}
        self._args: dict[tuple[int, int], list[str]] = {}
        self._calls: dict[tuple[int, int], tuple[str, str]] = {}

    def _choice(self, index: int) -> FoldedChoice:
        if index not in self.choices:
            self.choices[index] = FoldedChoice(index=index)
            self._content[index] = []
        return self.choices[index]

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, UsageReport):
            self.usage = event.usage
            return
        if isinstance(event, ToolReport):
            self.tool_reports.append(event)
            return
        if isinstance(event, KeepAlive | AudioDelta):
            return
        choice = self._choice(event.choice)
        if isinstance(event, ContentDelta):
            self._content[event.choice].append(event.text)
            if event.logprobs:
                if choice.logprobs is None:
                    choice.logprobs = []
                choice.logprobs.extend(event.logprobs)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.setdefault(event.choice, []).append(event.text)
        elif isinstance(event, RoleStart):
            if event.is_thinking:
                self._reasoning.setdefault(event.choice, [])
        elif isinstance(event, ToolCallStart):
            self._calls[(event.choice, event.index)] = (event.id, event.name)
            self._args[(event.choice, event.index)] = []
        elif isinstance(event, ToolCallArgsDelta):
            self._args[(event.choice, event.index)].append(event.text)
        elif isinstance(event, Finish):
            choice.finish_reason = event.reason

    def result(self) -> FoldedAnswer:
        for index, choice in self.choices.items():
            choice.content = "".join(self._content[index])
            if index in self._reasoning:
                choice.reasoning_content = "".join(self._reasoning[index])
        for (c, i), (call_id, name) in sorted(self._calls.items()):
            self.choices[c].tool_calls.append(ToolCall(id=call_id, name=name, arguments="".join(self._args[(c, i)])))
        choices = [self.choices[i] for i in sorted(self.choices)]
        return FoldedAnswer(choices=choices, usage=self.usage, tool_reports=self.tool_reports)


def fold(events: Iterable[ChatEvent]) -> FoldedAnswer:
    folder = _Folder()
    for event in events:
        folder.add(event)
    return folder.result()


async def afold(events: AsyncIterable[ChatEvent]) -> FoldedAnswer:
    folder = _Folder()
    async for event in events:
        folder.add(event)
    return folder.result()
