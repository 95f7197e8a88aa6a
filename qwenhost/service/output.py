"""Per-choice output pipeline: token bytes -> UTF-8 text -> stop strings -> parser -> ChatEvents."""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from qwenhost.core.events import ChatEvent, ContentDelta, Finish
from qwenhost.core.types import FinishReason, TokenLogprob, TopLogprob
from qwenhost.engine.protocol import TokenOut
from qwenhost.parsing.base import OutputParser
from qwenhost.parsing.stop import StopMatcher


def _token_text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


class ChoicePipeline:
    """Turns one choice's engine tokens into events. Logprobs ride on the content they produced."""

    def __init__(self, choice: int, parser: OutputParser, stop_strings: Sequence[str], *, logprobs: bool) -> None:
        self.choice = choice
        self.parser = parser
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = StopMatcher(stop_strings)
        self._logprobs = logprobs
        self._pending: deque[tuple[int, TokenLogprob]] = deque()  # (text offset where the token ends, entry)
        self._fed_chars = 0
        self._released_chars = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0
        self.finish_reason: FinishReason | None = None

    @property
    def is_done(self) -> bool:
        return self.finish_reason is not None

    def feed(self, token: TokenOut) -> list[ChatEvent]:
        if self.is_done:
            return []
        self.completion_tokens += 1
        was_reasoning = self.parser.is_reasoning
        events = self._feed(token)
        # A thought token is read inside the thought and leaves the parser inside: the think tags are not
        # counted, exactly as the engine counts thinking_budget (engine/thought.py).
        if was_reasoning and self.parser.is_reasoning:
            self.reasoning_tokens += 1
        return events

    def _feed(self, token: TokenOut) -> list[ChatEvent]:
        text = self._decoder.decode(token.piece) if token.piece else ""
        if self._logprobs and not token.is_end:
            self._pending.append((self._fed_chars + len(text), self._entry(token)))
        self._fed_chars += len(text)
        released, is_stopped = self._stop.feed(text)
        events = self._release(released)
        if is_stopped:
            return events + self._finish("stop")
        if token.finish is not None:
            tail = self._decoder.decode(b"", final=True)
            released, is_stopped = self._stop.feed(tail)
            events += self._release(released)
            if not is_stopped:
                events += self._release(self._stop.flush())
            return events + self._finish(token.finish)
        return events

    def truncate(self) -> list[ChatEvent]:
        """End early (server timeout): whatever was generated so far is the answer (spec §4.12)."""
        if self.is_done:
            return []
        return self._release(self._stop.flush()) + self._finish("length")

    def _release(self, text: str) -> list[ChatEvent]:
        if not text:
            return []
        self._released_chars += len(text)
        events = self.parser.feed(text)
        if self._pending:
            ready = []
            while self._pending and self._pending[0][0] <= self._released_chars:
                ready.append(self._pending.popleft()[1])
            if ready:
                events = self._attach(events, ready)
        return events

    def _attach(self, events: list[ChatEvent], entries: list[TokenLogprob]) -> list[ChatEvent]:
        # Logprobs cover answer content only; entries whose text became reasoning or a tool call are dropped.
        for i, event in enumerate(events):
            if isinstance(event, ContentDelta):
                events[i] = replace(event, logprobs=event.logprobs + tuple(entries))
                break
        return events

    def _finish(self, reason: FinishReason) -> list[ChatEvent]:
        events = self.parser.finish()
        if self._pending and self.finish_reason is None:
            leftovers = [e for _, e in self._pending]
            self._pending.clear()
            if not self._stop.is_stopped:
                events = self._attach(events, leftovers)
        if reason == "stop" and self.parser.num_tool_calls > 0:
            reason = "tool_calls"
        self.finish_reason = reason
        return [*events, Finish(self.choice, reason)]

    def _entry(self, token: TokenOut) -> TokenLogprob:
        return TokenLogprob(
            token=_token_text(token.piece),
            bytes=tuple(token.piece),
            logprob=token.logprob,
            top_logprobs=tuple(TopLogprob(_token_text(a.piece), tuple(a.piece), a.logprob) for a in token.top),
        )
