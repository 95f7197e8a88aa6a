"""Messages -> template input -> prompt text -> tokens, plus the token offsets of cache markers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import ContentPart, Message, TextPart, ToolSpec
from qwenhost.service.models import ServedModel
from qwenhost.templates.renderer import TemplateRenderError

# Private-use code points: never produced by clients' text, so the marker's position is unambiguous.
_MARK = "\ue000qwenhost-cache-mark\ue001"
MAX_CACHE_MARKERS = 4  # spec §4.2: only the last four markers take effect


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    text: str
    tokens: tuple[int, ...]
    cache_pins: tuple[int, ...] = ()


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


class PromptBuilder:
    def __init__(self, model: ServedModel) -> None:
        self.model = model

    def render(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        template_kwargs: Mapping[str, Any] | None = None,
        assistant_prefix: str | None = None,
    ) -> str:
        """The prompt text; with ``assistant_prefix`` the last assistant turn is left open (partial mode)."""
        template = self.model.tool_template if tools else self.model.template
        try:
            text = template.render(
                template_messages(messages),
                tools=template_tools(tools) if tools else None,
                add_generation_prompt=True,
                **dict(template_kwargs or {}),
            )
        except TemplateRenderError as exc:
            raise InvalidParameter(str(exc)) from exc
        return text + (assistant_prefix or "")

    def build(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        template_kwargs: Mapping[str, Any] | None = None,
        assistant_prefix: str | None = None,
    ) -> RenderedPrompt:
        text = self.render(messages, tools=tools, template_kwargs=template_kwargs, assistant_prefix=assistant_prefix)
        tokens = tuple(self.model.backend.tokenizer.tokenize(text, add_special=False, parse_special=True))
        pins = self._cache_pins(messages, tools, template_kwargs, assistant_prefix, tokens)
        return RenderedPrompt(text=text, tokens=tokens, cache_pins=pins)

    def _cache_pins(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        template_kwargs: Mapping[str, Any] | None,
        assistant_prefix: str | None,
        tokens: tuple[int, ...],
    ) -> tuple[int, ...]:
        """Token lengths of the prefixes that end at each cache_control marker (the last four win)."""
        marks = [
            (i, j)
            for i, m in enumerate(messages)
            if isinstance(m.content, tuple)
            for j, p in enumerate(m.content)
            if p.cache_control
        ][-MAX_CACHE_MARKERS:]
        pins = []
        for i, j in marks:
            marked = list(messages)
            original = marked[i].content
            assert isinstance(original, tuple)
            content: list[ContentPart] = list(original)
            part = content[j]
            if isinstance(part, TextPart):
                content[j] = replace(part, text=part.text + _MARK)
            else:
                content.insert(j + 1, TextPart(_MARK))
            marked[i] = replace(marked[i], content=tuple(content))
            text = self.render(marked, tools=tools, template_kwargs=template_kwargs, assistant_prefix=assistant_prefix)
            cut = text.find(_MARK)
            if cut < 0:
                continue
            prefix = self.model.backend.tokenizer.tokenize(text[:cut], add_special=False, parse_special=True)
            n = 0
            for a, b in zip(prefix, tokens, strict=False):
                if a != b:
                    break
                n += 1
            pins.append(n)
        return tuple(pins)
