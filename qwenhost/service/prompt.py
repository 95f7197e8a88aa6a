"""Messages -> template input -> prompt text, rendered once with every cache marker placed in the same pass,
and the token lengths of the prefixes those markers end (explicit cache, spec §4.2)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import Message, TextPart, ToolSpec
from qwenhost.templates.renderer import ChatTemplate, TemplateRenderError

MAX_CACHE_MARKERS = 4  # spec §4.2: only the last four markers take effect
# A marker is private-use code points around digits: no template filter (trim, upper, escape) changes it,
# and the per-render nonce means text a client sends can never pass for one.
_MARK = "\ue002{nonce}:{index}\ue003"

Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    text: str
    tokens: tuple[int, ...]
    cache_pins: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedText:
    """The template's output with the markers taken out, and where each one stood (in message order)."""

    text: str
    marks: tuple[int, ...] = ()


def _arguments(raw: str) -> Any:
    # Templates iterate or re-serialise arguments, so they get the object, not the OpenAI JSON string (§6.1).
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw
    return value if isinstance(value, dict) else raw


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.role == "assistant":
            if m.tool_calls:
                d["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                    for c in m.tool_calls
                ]
            if m.reasoning_content is not None:
                d["reasoning_content"] = m.reasoning_content
        elif m.role == "tool":
            if m.tool_call_id is not None:
                d["tool_call_id"] = m.tool_call_id
            if m.name is not None:
                d["name"] = m.name
        out.append(d)
    return out


def template_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
        }
        for t in tools
    ]


def render(
    template: ChatTemplate,
    messages: Sequence[Message],
    *,
    tools: Sequence[ToolSpec] = (),
    template_kwargs: Mapping[str, Any] | None = None,
) -> RenderedText:
    """One render of the conversation with the generation prompt; each of the last four cache_control
    parts carries a marker through it, so the marker offsets come from the same pass as the text."""
    nonce = str(secrets.randbelow(10**9))
    marked = with_cache_markers(messages, nonce)
    try:
        text = template.render(
            template_messages(marked),
            tools=template_tools(tools) if tools else None,
            add_generation_prompt=True,
            **dict(template_kwargs or {}),
        )
    except TemplateRenderError as exc:
        raise InvalidParameter(str(exc)) from exc
    return strip_markers(text, nonce) if marked is not messages else RenderedText(text)


def with_cache_markers(messages: Sequence[Message], nonce: str) -> Sequence[Message]:
    """``messages`` with a numbered marker where each of the last four cache_control parts ends.

    A marker is put next to text, never between whitespace and the trimmed text (after the last
    non-whitespace character up to the part's end, else before the next one, else at the end), so a
    template that trims or strips a message's text trims the same characters with and without it.
    A template that tests a marked message's exact text (``endswith``) sees the marker."""
    marked = [
        (i, j)
        for i, m in enumerate(messages)
        if isinstance(m.content, tuple)
        for j, p in enumerate(m.content)
        if p.cache_control
    ][-MAX_CACHE_MARKERS:]
    if not marked:
        return messages
    inserts: dict[int, list[tuple[int, str]]] = {}
    for index, (i, j) in enumerate(marked):
        content = messages[i].content
        assert isinstance(content, tuple)
        end = sum(len(p.text) for p in content[: j + 1] if isinstance(p, TextPart))
        inserts.setdefault(i, []).append((end, _MARK.format(nonce=nonce, index=index)))
    out = list(messages)
    for i, marks in inserts.items():
        text = out[i].text()
        for offset, mark in sorted(((_mark_offset(text, end), mark) for end, mark in marks), reverse=True):
            text = text[:offset] + mark + text[offset:]
        # Templates read a message's text only (media parts are sentinels by now): one part holds it all.
        out[i] = replace(out[i], content=(TextPart(text),))
    return out


def _mark_offset(text: str, end: int) -> int:
    before = text[:end].rstrip()
    if before:
        return len(before)
    after = text[end:]
    if after.strip():
        return end + len(after) - len(after.lstrip())
    return len(text)


def strip_markers(text: str, nonce: str) -> RenderedText:
    """Take every marker out of ``text``; a marker the template repeated counts where it first stood,
    one it dropped is not pinned."""
    pattern = re.compile(re.escape("\ue002" + nonce + ":") + r"(\d+)\ue003")
    pieces: list[str] = []
    found: dict[int, int] = {}
    pos, removed = 0, 0
    for match in pattern.finditer(text):
        pieces.append(text[pos : match.start()])
        found.setdefault(int(match.group(1)), match.start() - removed)
        removed += match.end() - match.start()
        pos = match.end()
    pieces.append(text[pos:])
    return RenderedText("".join(pieces), tuple(found[k] for k in sorted(found)))


def cache_pins(tokenize: Tokenize, text: str, marks: Sequence[int], tokens: Sequence[int]) -> tuple[int, ...]:
    """Token lengths of the prefixes of ``text`` that end at each mark: the longest run of ``tokens``
    that the prefix tokenizes to as well (a token that straddles the mark is not pinned)."""
    pins = []
    for mark in marks:
        prefix = tokenize(text[:mark])
        n = 0
        for a, b in zip(prefix, tokens, strict=False):
            if a != b:
                break
            n += 1
        pins.append(n)
    return tuple(pins)
