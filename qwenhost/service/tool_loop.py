"""The one server-side tool loop around run(): a feature (web search, the code interpreter) offers a reserved
tool; when the model calls it the server runs it, appends the call and its result to the conversation, and
generates again, within bounded calls and time, so that the client sees one continuous answer.

What the client sees (docs/search.md): one RoleStart; the reserved call never (its ToolCallStart/-ArgsDelta,
the round's Finish and UsageReport are held back); KeepAlive while a tool runs; one Finish; one UsageReport
whose counts are every round's summed (spec §4.8-§4.9: the tool round-trip is input of the next round).
Each round is prepared again and reserves its own engine room, given back before the tool runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.events import (
    ChatEvent,
    ContentDelta,
    Finish,
    KeepAlive,
    ReasoningDelta,
    RoleStart,
    ToolCallArgsDelta,
    ToolCallStart,
    ToolReport,
    UsageReport,
)
from qwenhost.core.server_tools import ServerTool, ToolOutcome
from qwenhost.core.types import CacheReport, ChatRequest, FinishReason, Message, ToolCall, Usage

if TYPE_CHECKING:
    from qwenhost.service.job import Job

log = logging.getLogger("qwenhost.tools")


@dataclass(frozen=True, slots=True)
class Offer:
    """What a feature asks of the loop for one request."""

    tool: ServerTool | None  # offered to the model (None: nothing offered; e.g. a forced search alone)
    max_calls: int  # the most calls of ``tool`` the loop runs for this request
    messages: tuple[Message, ...]  # the conversation to start from (a forced search's results placed in it)
    reports: tuple[ToolReport, ...] = ()  # what the work done before generating may show a dialect
    notes: tuple[str, ...] = ()  # parameters read differently from what was asked (x-qwenhost-adjusted)


class ServerFeature(Protocol):
    """A request parameter that the server honours with a tool (``enable_search``, ``enable_code_interpreter``)."""

    def is_asked(self, request: ChatRequest) -> bool: ...

    def admit(self, request: ChatRequest) -> ChatRequest:
        """Check the request's rules (raise a ServeError: before the first byte) and return the request with
        the parameter cleared, so that the plan's refusal of an unhandled parameter lets it through."""
        ...

    async def offer(self, request: ChatRequest) -> Offer:
        """Work before generating (a forced search) and the tool to offer; ``request`` is the original."""
        ...


@dataclass(frozen=True, slots=True)
class ToolLoopConfig:
    max_rounds: int = 4  # generation rounds in all, whatever the features allow
    total_timeout_s: float = 120.0  # from the first round's start; no tool starts after it
    keepalive_s: float = 5.0  # an SSE comment this often while a tool runs


@dataclass(frozen=True)
class ToolSession:
    """One request's tools, carried on its Job (service/job.py)."""

    request: ChatRequest  # parameters cleared; the offered tools not yet added
    tools: Mapping[str, ServerTool]
    max_calls: int
    reports: tuple[ToolReport, ...]
    key_id: str | None
    notes: tuple[str, ...] = ()
    started_s: float = field(default_factory=time.monotonic)

    def request_for(self, messages: Sequence[Message], *, offered: bool) -> ChatRequest:
        defs = tuple(t.definition() for t in self.tools.values()) if offered else ()
        return replace(self.request, messages=tuple(messages), tools=self.request.tools + defs)


Generate = Callable[["Job"], AsyncGenerator[ChatEvent, None]]
Prepare = Callable[[ChatRequest, str, "str | None"], Awaitable["Job"]]


class ToolLoop:
    def __init__(self, features: Sequence[ServerFeature], config: ToolLoopConfig = ToolLoopConfig()) -> None:
        self.features = tuple(features)
        self.config = config

    async def open(self, request: ChatRequest, key_id: str | None) -> ToolSession | None:
        """None when the request asks for no feature; else its session (a forced search has run)."""
        asked = [f for f in self.features if f.is_asked(request)]
        if not asked:
            return None
        cleared = request
        for feature in asked:
            cleared = feature.admit(cleared)
        messages, max_calls = request.messages, 0
        tools: dict[str, ServerTool] = {}
        reports: list[ToolReport] = []
        notes: list[str] = []
        for feature in asked:
            offer = await feature.offer(replace(request, messages=messages))
            messages, reports, notes = offer.messages, [*reports, *offer.reports], [*notes, *offer.notes]
            if offer.tool is not None:
                tools[offer.tool.name] = offer.tool
                max_calls += offer.max_calls
        if tools and request.n > 1:
            raise InvalidParameter(f"{', '.join(tools)}: a server-side tool answers with n = 1 only")
        taken = [t.name for t in request.tools if t.name in tools]
        if taken:
            raise InvalidParameter(f"Tool names are not allowed to be [{taken[0]}]")
        return ToolSession(replace(cleared, messages=messages), tools, max_calls, tuple(reports), key_id, tuple(notes))

    async def run(
        self, job: Job, session: ToolSession, generate: Generate, prepare: Prepare
    ) -> AsyncIterator[ChatEvent]:
        """The rounds of one answer; closing this iterator cancels a running tool and the round's generation."""
        if not session.tools:  # work done before generating, nothing offered: one pass, the reports shown
            async for event in _with_reports(generate(job), session.reports):
                yield event
            return
        current, calls_done, parts = job, 0, []
        messages = list(session.request.messages)
        try:
            for round_no in range(self.config.max_rounds):
                state = _Round(set(session.tools), is_first=round_no == 0)
                async with contextlib.aclosing(generate(current)) as events:
                    async for event in events:
                        for out in state.feed(event, session.reports):
                            yield out
                parts.append(state.usage)
                current.close()  # the engine's room goes back before the tool runs
                last_round = round_no + 1 >= self.config.max_rounds
                if not state.hidden or state.client_calls or calls_done >= session.max_calls or last_round:
                    break
                if self._remaining_s(session) <= 0:
                    log.info("request %s: tool loop out of time after %d calls", job.request_id, calls_done)
                    break
                calls = state.hidden[: session.max_calls - calls_done]
                calls_done += len(calls)
                messages.append(state.assistant_message(calls))
                async with contextlib.aclosing(self._run_calls(session, calls, messages, job.request_id)) as runs:
                    async for item in runs:
                        yield item
                offered = calls_done < session.max_calls and round_no + 2 < self.config.max_rounds
                current = await prepare(session.request_for(messages, offered=offered), job.request_id, session.key_id)
            yield Finish(0, state.finish_reason())
            yield UsageReport(sum_usage(parts))
        finally:
            if current is not job:
                current.close()

    def _remaining_s(self, session: ToolSession) -> float:
        return session.started_s + self.config.total_timeout_s - time.monotonic()

    async def _run_calls(
        self, session: ToolSession, calls: Sequence[ToolCall], messages: list[Message], request_id: str
    ) -> AsyncGenerator[KeepAlive | ToolReport, None]:
        """Each call run in turn, its result appended to ``messages``; closing this stops the running one."""
        for call in calls:
            outcome = None
            async with contextlib.aclosing(self._run_tool(session, call, request_id)) as runs:
                async for item in runs:
                    if isinstance(item, KeepAlive):
                        yield item
                    else:
                        outcome = item
            assert outcome is not None
            yield ToolReport(call.name, outcome.info)
            messages.append(Message(role="tool", content=outcome.text, tool_call_id=call.id, name=call.name))

    async def _run_tool(
        self, session: ToolSession, call: ToolCall, request_id: str
    ) -> AsyncGenerator[KeepAlive | ToolOutcome, None]:
        """The tool's outcome, with a KeepAlive every keepalive_s while it runs; cancelled if this is closed."""
        tool = session.tools[call.name]
        timeout_s = max(0.1, self._remaining_s(session))
        arguments = _arguments(call.arguments)
        if arguments is None:
            yield ToolOutcome(text="The call's arguments were not a JSON object; nothing was run.")
            return
        task = asyncio.ensure_future(_bounded(tool, arguments, timeout_s))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.config.keepalive_s)
                if done:
                    break
                yield KeepAlive()
            outcome = task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        log.info("request %s: %s ran (%d chars back)", request_id, call.name, len(outcome.text))
        yield outcome


async def _bounded(tool: ServerTool, arguments: Mapping[str, Any], timeout_s: float) -> ToolOutcome:
    """A tool's failure is the model's to read, never the client's 5xx."""
    try:
        async with asyncio.timeout(timeout_s + 1.0):  # the tool bounds itself; this is the backstop
            return await tool.run(arguments, timeout_s=timeout_s)
    except TimeoutError:
        return ToolOutcome(text=f"The {tool.name} tool timed out.")
    except Exception:
        log.exception("server tool %s failed", tool.name)
        return ToolOutcome(text=f"The {tool.name} tool failed.")


def _arguments(text: str) -> Mapping[str, Any] | None:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _with_reports(
    events: AsyncGenerator[ChatEvent, None], reports: Sequence[ToolReport]
) -> AsyncIterator[ChatEvent]:
    async with contextlib.aclosing(events):
        async for event in events:
            yield event
            if isinstance(event, RoleStart) and event.choice == 0:
                for report in reports:
                    yield report


class _Round:
    """One round's events, filtered: reserved calls held back, the round's Finish and usage kept."""

    def __init__(self, reserved: set[str], *, is_first: bool) -> None:
        self.reserved = reserved
        self.is_first = is_first
        self.hidden: list[ToolCall] = []
        self.client_calls = 0
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._hidden_at: dict[int, int] = {}  # the parser's call index -> position in ``hidden``
        self._visible_at: dict[int, int] = {}  # the parser's call index -> the index the client sees

    def feed(self, event: ChatEvent, reports: Sequence[ToolReport]) -> list[ChatEvent]:
        if isinstance(event, RoleStart):
            return [event, *reports] if self.is_first and event.choice == 0 else []
        if isinstance(event, UsageReport):
            self.usage = event.usage
            return []
        if isinstance(event, Finish):
            self.finish = event.reason
            return []
        if isinstance(event, ToolCallStart):
            if event.name in self.reserved:
                self._hidden_at[event.index] = len(self.hidden)
                self.hidden.append(ToolCall(id=event.id, name=event.name, arguments=""))
                return []
            self._visible_at[event.index] = self.client_calls
            self.client_calls += 1
            return [replace(event, index=self._visible_at[event.index])]
        if isinstance(event, ToolCallArgsDelta):
            if event.index in self._hidden_at:
                at = self._hidden_at[event.index]
                call = self.hidden[at]
                self.hidden[at] = replace(call, arguments=call.arguments + event.text)
                return []
            return [replace(event, index=self._visible_at[event.index])]
        if isinstance(event, ContentDelta):
            self._content.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        return [event]

    def assistant_message(self, calls: Sequence[ToolCall]) -> Message:
        reasoning = "".join(self._reasoning) or None
        return Message(
            role="assistant", content="".join(self._content), tool_calls=tuple(calls), reasoning_content=reasoning
        )

    def finish_reason(self) -> FinishReason:
        """A round that ended on a reserved call the loop did not run (its bounds reached) ends the answer."""
        if self.finish == "tool_calls" and not self.client_calls:
            return "stop"
        return self.finish or "stop"


def sum_usage(parts: Sequence[Usage | None]) -> Usage:
    """Every round's usage as one: each round's prompt is input (spec §4.8-§4.9), each output is output."""
    given = [u for u in parts if u is not None]

    def total(name: str) -> int | None:
        values = [getattr(u, name) for u in given if getattr(u, name) is not None]
        return sum(values) if values else None

    cache = CacheReport(
        cached_tokens=sum(u.cache.cached_tokens for u in given),
        cache_creation_tokens=sum(u.cache.cache_creation_tokens for u in given),
        is_explicit=any(u.cache.is_explicit for u in given),
    )
    optional = {f.name: total(f.name) for f in dataclasses.fields(Usage) if f.name not in _SUMMED}
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in given),
        completion_tokens=sum(u.completion_tokens for u in given),
        cache=cache,
        **optional,
    )


_SUMMED = ("prompt_tokens", "completion_tokens", "cache")
