"""Incremental tool-call parsing of answer text: Hermes-style JSON in ``<tool_call>…</tool_call>``
(Qwen2.5/Qwen3/QwQ, spec §6.1, §6.2) and the Qwen3-Coder/Qwen3.5 XML body (§6.4, in tools_xml.py).

The parser sees only answer text (a reasoning splitter, if any, wraps it and forwards the answer).
Text outside the blocks is content; tags never are. Whitespace that only separates text from a
call, or calls from each other, is dropped, so an answer that is only calls has ``content: ""``
(spec §4.7). A call starts (ToolCallStart: index, id, name) as soon as its name is known and its
arguments then stream as they are generated (spec §2.4, §6.5 rule 4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from qwenhost.core import ids
from qwenhost.core.events import ChatEvent, ContentDelta, ToolCallArgsDelta, ToolCallStart
from qwenhost.parsing.base import partial_suffix

IdFactory = Callable[[], str]


class CallBody:
    """The text of one block between the tags, turned into events as it arrives."""

    def __init__(self, parser: TaggedToolParser, index: int) -> None:
        self.parser = parser
        self.index = index
        self.text = ""
        self.is_started = False

    def feed(self, text: str) -> list[ChatEvent]:
        raise NotImplementedError

    def close(self) -> list[ChatEvent]:
        """The close tag arrived; returns the remaining events, or raises ValueError for a malformed body."""
        raise NotImplementedError

    def truncate(self) -> list[ChatEvent]:
        """Generation ended inside the block (max_tokens): emit what is sound of the started call."""
        raise NotImplementedError

    def find_close(self, buf: str, tag: str) -> int:
        """Where in ``buf`` (text that follows what was fed) the close tag ends this block, or -1."""
        return buf.find(tag)

    def start(self, name: str) -> list[ChatEvent]:
        self.is_started = True
        return [ToolCallStart(self.parser.choice, self.index, self.parser.new_id(), name)]

    def args(self, text: str) -> list[ChatEvent]:
        return [ToolCallArgsDelta(self.parser.choice, self.index, text)] if text else []


class TaggedToolParser:
    """Finds ``open_tag … close_tag`` blocks in answer text; the body format is the subclass's."""

    def __init__(
        self,
        choice: int,
        *,
        open_tag: str = "<tool_call>",
        close_tag: str = "</tool_call>",
        max_calls: int | None = None,
        new_id: IdFactory = ids.tool_call_id,
    ) -> None:
        self.choice = choice
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.max_calls = max_calls
        self.new_id = new_id
        self._held = ""  # outside a block: text not yet known to be content
        self._body: CallBody | None = None
        self._is_dropping = False  # inside a block beyond max_calls: swallowed
        self._num_calls = 0
        self._is_after_call = False

    # -- OutputParser -----------------------------------------------------------------------------
    @property
    def is_reasoning(self) -> bool:
        return False

    @property
    def num_tool_calls(self) -> int:
        return self._num_calls

    def feed(self, text: str) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        buf = self._held + text
        self._held = ""
        while buf:
            buf = self._inside(buf, events) if self._in_block else self._outside(buf, events)
        return events

    def finish(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        if self._in_block:
            if self._body is not None and self._body.is_started:
                events += self._body.truncate()
                self._num_calls += 1
            elif self._body is not None:
                events += self._content(self.open_tag + self._body.text + self._held)
            self._body, self._is_dropping, self._held = None, False, ""
        else:
            events += self._content(self._held)
            self._held = ""
        return events

    def make_body(self, index: int) -> CallBody:
        raise NotImplementedError

    # -- scanning ---------------------------------------------------------------------------------
    @property
    def _in_block(self) -> bool:
        return self._body is not None or self._is_dropping

    def _outside(self, buf: str, events: list[ChatEvent]) -> str:
        at = buf.find(self.open_tag)
        if at < 0:
            keep = partial_suffix(buf, self.open_tag)
            head, tail = buf[: len(buf) - keep], buf[len(buf) - keep :]
            text = head.rstrip()  # whitespace may only separate this text from a call: hold it
            self._held = head[len(text) :] + tail
            events += self._content(text)
            return ""
        events += self._content(buf[:at].rstrip())
        if self.max_calls is not None and self._num_calls >= self.max_calls:
            self._is_dropping = True  # parallel_tool_calls=false: at most one call (spec §4.7)
        else:
            self._body = self.make_body(self._num_calls)
        return buf[at + len(self.open_tag) :]

    def _inside(self, buf: str, events: list[ChatEvent]) -> str:
        at = self._body.find_close(buf, self.close_tag) if self._body is not None else buf.find(self.close_tag)
        if at < 0:
            keep = partial_suffix(buf, self.close_tag)
            self._held = buf[len(buf) - keep :]
            if self._body is not None and len(buf) > keep:
                events += self._body.feed(buf[: len(buf) - keep])
            return ""
        body = self._body
        if body is not None:
            if at:
                events += body.feed(buf[:at])
            events += self._close(body)
        self._body, self._is_dropping = None, False
        self._is_after_call = True
        return buf[at + len(self.close_tag) :]

    def _close(self, body: CallBody) -> list[ChatEvent]:
        try:
            events = body.close()
        except ValueError:
            # Spec §6.5 rule 5: a block that is not a call is returned as text rather than failing.
            return self._content(self.open_tag + body.text + self.close_tag)
        self._num_calls += 1
        return events

    def _content(self, text: str) -> list[ChatEvent]:
        if self._is_after_call:
            text = text.lstrip()
            if not text:
                return []
            self._is_after_call = False
        return [ContentDelta(self.choice, text)] if text else []


# The arguments start at their first character, so the match does not depend on how text was split.
_HERMES_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)')


def _args_prefix(text: str) -> str:
    """What of the arguments text is certainly theirs: not the trailing ``}`` that may close the call."""
    text = text.rstrip()
    return text[:-1].rstrip() if text.endswith("}") else text


def _json_string(body: str) -> str | None:
    try:
        value = json.loads(f'"{body}"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _lex(text: str, state: tuple[bool, bool]) -> tuple[bool, bool]:
    """JSON string state (inside a string, after a backslash) once ``text`` is read from ``state``."""
    is_string, is_escaped = state
    for char in text:
        if is_escaped:
            is_escaped = False
        elif is_string and char == "\\":
            is_escaped = True
        elif char == '"':
            is_string = not is_string
    return is_string, is_escaped


class HermesBody(CallBody):
    """``{"name": "NAME", "arguments": {...}}``: the name starts the call, the arguments stream raw.

    The close tag ends the block only outside a JSON string: a model whose tags are spelled out in plain
    text (no special token, e.g. SmolLM2) can write ``</tool_call>`` inside an argument's string, which the
    grammar allows there, and the call must not end in the middle of its own JSON."""

    def __init__(self, parser: TaggedToolParser, index: int) -> None:
        super().__init__(parser, index)
        self._args_at = 0
        self._sent = 0
        self._lexed: tuple[bool, bool] = (False, False)

    def find_close(self, buf: str, tag: str) -> int:
        state, start = self._lexed, 0
        while (at := buf.find(tag, start)) >= 0:
            state = _lex(buf[start:at], state)
            if not state[0]:
                return at
            state, start = _lex(buf[at], state), at + 1
        return -1

    def feed(self, text: str) -> list[ChatEvent]:
        self.text += text
        self._lexed = _lex(text, self._lexed)
        events: list[ChatEvent] = []
        if not self.is_started:
            head = _HERMES_HEAD.match(self.text)
            name = _json_string(head.group(1)) if head is not None else None
            if head is None or name is None:
                return events  # another key order, or not JSON: decided at the close tag
            events += self.start(name)
            self._args_at = head.end()
        return events + self._send(_args_prefix(self.text[self._args_at :]))

    def close(self) -> list[ChatEvent]:
        if not self.is_started:
            return self._close_unstreamed()
        raw = self.text[self._args_at :]
        args = _args_prefix(raw)
        if not _is_json(args) and _is_json(raw.strip()):
            args = raw.strip()  # the call's own closing brace was missing
        return self._send(args)

    def truncate(self) -> list[ChatEvent]:
        return []  # what was sent is all that is certain; finish_reason says "length"

    def _send(self, args: str) -> list[ChatEvent]:
        piece = args[self._sent :]
        self._sent = len(args)
        return self.args(piece)

    def _close_unstreamed(self) -> list[ChatEvent]:
        call = json.loads(self.text)  # ValueError -> the block becomes content
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ValueError("not a tool call")
        arguments = call.get("arguments", call.get("parameters", {}))
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        return self.start(call["name"]) + self.args(text)


class HermesToolParser(TaggedToolParser):
    def make_body(self, index: int) -> CallBody:
        return HermesBody(self, index)
