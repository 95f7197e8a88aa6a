"""The Qwen3-Coder / Qwen3.5 XML call body (spec §6.4) inside ``<tool_call>…</tool_call>``:

    <function=get_weather>
    <parameter=city>
    Beijing
    </parameter>
    </function>

Values are raw text; they are typed with the tool's JSON Schema (as vLLM's qwen3_coder parser does)
and the arguments are re-serialised as one JSON object, streamed one parameter at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from qwenhost.core import ids
from qwenhost.core.events import ChatEvent
from qwenhost.parsing.tools import CallBody, IdFactory, TaggedToolParser

_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>")
_PARAMETER = re.compile(r"\s*<parameter=([^>\n]+)>")
_FUNCTION_END = re.compile(r"\s*</function>")
PARAMETER_END = "</parameter>"
_PYTHON_LITERALS = {"True": True, "False": False, "None": None}


def _types(schema: Any) -> list[str]:
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    if isinstance(kind, str):
        return [kind]
    return [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []


def coerce_value(raw: str, schema: Any) -> Any:
    """A parameter's raw text as the JSON value its schema asks for (strings stay text)."""
    types = _types(schema)
    enum = schema.get("enum") if isinstance(schema, Mapping) else None
    is_string = "string" in types or (not types and isinstance(enum, list) and all(isinstance(v, str) for v in enum))
    if is_string:
        if raw.startswith('"') and len(types) == 1:
            # Constrained strings (pattern, format, lengths) are generated as JSON strings (constrain/).
            try:
                value = json.loads(raw)
            except ValueError:
                return raw
            return value if isinstance(value, str) else raw
        if len(types) == 1 or not raw.strip():
            return raw
    try:
        return json.loads(raw)
    except ValueError:
        pass
    if raw.strip() in _PYTHON_LITERALS:
        return _PYTHON_LITERALS[raw.strip()]
    return raw


def _strip_newline(value: str) -> str:
    # The template puts the value on its own line: one newline after the open tag and one before the close.
    value = value.removeprefix("\n")
    return value.removesuffix("\n")


class XmlBody(CallBody):
    def __init__(self, parser: TaggedToolParser, index: int, tools: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__(parser, index)
        self._tools = tools
        self._properties: Mapping[str, Any] = {}
        self._at = 0  # how much of self.text is parsed
        self._num_params = 0
        self._is_function_closed = False

    def feed(self, text: str) -> list[ChatEvent]:
        self.text += text
        events: list[ChatEvent] = []
        while not self._is_function_closed:
            step = self._step(self.text[self._at :])
            if step is None:
                break
            used, produced = step
            self._at += used
            events += produced
        return events

    def _step(self, rest: str) -> tuple[int, list[ChatEvent]] | None:
        """Parse one complete unit at the start of ``rest``: the function tag, a parameter, or the end."""
        if not self.is_started:
            head = _FUNCTION.match(rest)
            if head is None:
                return None
            name = head.group(1).strip()
            params = self._tools.get(name, {})
            props = params.get("properties") if isinstance(params, Mapping) else None
            self._properties = props if isinstance(props, Mapping) else {}
            return head.end(), self.start(name)
        param = _PARAMETER.match(rest)
        if param is not None:
            end = rest.find(PARAMETER_END, param.end())
            if end < 0:
                return None
            name = param.group(1).strip()
            value = coerce_value(_strip_newline(rest[param.end() : end]), self._properties.get(name))
            sep = "{" if self._num_params == 0 else ", "
            self._num_params += 1
            piece = f"{sep}{json.dumps(name, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}"
            return end + len(PARAMETER_END), self.args(piece)
        done = _FUNCTION_END.match(rest)
        if done is not None:
            self._is_function_closed = True
            return done.end(), self._end_object()
        return None

    def _end_object(self) -> list[ChatEvent]:
        return self.args("}" if self._num_params else "{}")

    def close(self) -> list[ChatEvent]:
        if not self.is_started:
            raise ValueError("no <function=…> in the call")
        return [] if self._is_function_closed else self._end_object()

    def truncate(self) -> list[ChatEvent]:
        return []  # the complete parameters were sent; finish_reason "length" says the rest is missing


class XmlToolParser(TaggedToolParser):
    def __init__(
        self,
        choice: int,
        tools: Mapping[str, Mapping[str, Any]],
        *,
        open_tag: str = "<tool_call>",
        close_tag: str = "</tool_call>",
        max_calls: int | None = None,
        new_id: IdFactory = ids.tool_call_id,
    ) -> None:
        super().__init__(choice, open_tag=open_tag, close_tag=close_tag, max_calls=max_calls, new_id=new_id)
        self.tools = tools

    def make_body(self, index: int) -> CallBody:
        return XmlBody(self, index, self.tools)
