"""response_format and tools/tool_choice -> one llguidance grammar (engine-neutral).

Tool calls are generated in the exact text the chat templates render them in (spec §6.1, §6.2, §6.4),
so the model sees its own history in the same shape and the output parser (parsing/tools.py) reads
them back unchanged:

  hermes_json: <tool_call>\\n{"name": "NAME", "arguments": {...}}\\n</tool_call>
  qwen_xml:    <tool_call>\\n<function=NAME>\\n<parameter=P>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import llguidance

from qwenhost.constrain.schema import ANY_OBJECT, tool_arguments_schema, with_layout
from qwenhost.core.types import NamedToolChoice, ResponseFormat, ToolSpec

ToolKind = Literal["hermes_json", "qwen_xml"]
CALL_SEPARATOR = "\n"  # between parallel calls, as the templates join them
_ANNOTATIONS = frozenset({"type", "description", "title", "default", "examples", "$comment"})


@dataclass(frozen=True, slots=True)
class ToolSyntax:
    """How calls are delimited in this model's output, and which tags are single special tokens."""

    kind: ToolKind = "hermes_json"
    open_tag: str = "<tool_call>"
    close_tag: str = "</tool_call>"
    open_token: int | None = None  # the tag's token id when the vocabulary has it as a special token
    close_token: int | None = None
    text_special_tokens: tuple[int, ...] = ()  # special tokens free text may hold (<think>, </think> …)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    tools: tuple[ToolSpec, ...]
    choice: Literal["auto", "required"] | NamedToolChoice
    is_parallel: bool
    syntax: ToolSyntax


def answer_schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    """The JSON Schema the answer must follow, or None for free text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_schema" and response_format.schema is not None:
        return dict(response_format.schema)
    return dict(ANY_OBJECT)  # json_object, or json_schema without a schema: any JSON object


def json_grammar(schema: Mapping[str, Any]) -> str:
    return str(llguidance.LLMatcher.grammar_from_json_schema(json.dumps(with_layout(schema))))


def tools_grammar(plan: ToolPlan, answer: Mapping[str, Any] | None = None) -> str:
    """Lark grammar for an answer under ``plan``; ``answer`` (a JSON Schema) replaces free text."""
    return str(llguidance.LLMatcher.grammar_from_lark(_LarkBuilder(plan).build(answer)))


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _token_set(ids: Iterable[int]) -> str:
    """``<[a-b,c]>``: llguidance's syntax for a set of token ids."""
    ranges: list[list[int]] = []
    for token in sorted(set(ids)):
        if ranges and token == ranges[-1][1] + 1:
            ranges[-1][1] = token
        else:
            ranges.append([token, token])
    return "<[" + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) + "]>"


class _LarkBuilder:
    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.syntax = plan.syntax
        self.rules: list[str] = []

    def build(self, answer: Mapping[str, Any] | None) -> str:
        s = self.syntax
        open_ = _token_set([s.open_token]) if s.open_token is not None else _lit(s.open_tag)
        close = _token_set([s.close_token]) if s.close_token is not None else _lit(s.close_tag)
        choice = self.plan.choice
        tools = self.plan.tools
        if isinstance(choice, NamedToolChoice):
            tools = tuple(t for t in tools if t.name == choice.name)
        bodies = [self._function(i, t) for i, t in enumerate(tools)]
        self.rules.append(f"function: {' | '.join(bodies)}")
        self.rules.append(f'call_rest: "\\n" function "\\n" {close}')
        calls = "call_rest"
        if self.plan.is_parallel and not isinstance(choice, NamedToolChoice):
            self.rules.append(f"more_calls: {_lit(CALL_SEPARATOR)} {open_} call_rest")
            calls = "call_rest more_calls*"
        if choice != "auto":
            start = f"{open_} {calls}"
        elif answer is not None:
            start = f"%json {json.dumps(with_layout(answer), ensure_ascii=False)} | {open_} {calls}"
        else:
            start = self._free_then_calls(open_, calls)
        return "\n".join(["%llguidance {}", f"start: {start}", *self.rules]) + "\n"

    def _free_then_calls(self, open_: str, calls: str) -> str:
        """Free text, optionally followed by calls. A literal open tag is a lazy trigger: the call is
        constrained from the moment the tag appears, and text before it is unconstrained."""
        specials = self.syntax.text_special_tokens
        self.rules.append("TEXT: /(.|\\n)+/")
        if specials:
            self.rules.append(f"free: (TEXT | {_token_set(specials)})*")
        else:
            self.rules.append("free: TEXT?")
        if self.syntax.open_token is not None:
            return f"free | free {open_} {calls}"
        self.rules.append(f"trigger[lazy]: /(.|\\n)*/ {open_}")
        if specials:
            self.rules.append(f"before: (TEXT? {_token_set(specials)})*")
            return f"free | before trigger {calls}"
        return f"free | trigger {calls}"

    def _function(self, index: int, tool: ToolSpec) -> str:
        schema = tool_arguments_schema(tool.parameters)
        if self.syntax.kind == "hermes_json":
            head = _lit(f'{{"name": "{tool.name}", "arguments": ')
            return f"{head} %json {json.dumps(with_layout(schema), ensure_ascii=False)} {_lit('}')}"
        return self._xml_function(index, tool.name, schema)

    def _xml_function(self, index: int, name: str, schema: Mapping[str, Any]) -> str:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = set(schema.get("required") or ())
        parts = [_lit(f"<function={name}>\n")]
        for j, (pname, pschema) in enumerate(props.items()):
            rule = f"p_{index}_{j}"
            self._xml_parameter(rule, pname, pschema if isinstance(pschema, Mapping) else {})
            parts.append(rule if pname in required else f"{rule}?")
        parts.append(_lit("</function>"))
        return " ".join(parts)

    def _xml_parameter(self, rule: str, name: str, schema: Mapping[str, Any]) -> None:
        """One ``<parameter=…>`` block: raw text for strings, JSON for everything else (spec §6.4)."""
        head = _lit(f"<parameter={name}>\n")
        tail = _lit("\n</parameter>\n")
        enum = schema.get("enum")
        if isinstance(enum, Sequence) and enum and all(isinstance(v, str) for v in enum):
            self.rules.append(f"{rule}: {head} ({' | '.join(_lit(v) for v in enum)}) {tail}")
        elif schema.get("type") == "string" and set(schema) <= _ANNOTATIONS:
            # A lazy lexeme ends at the first closing tag (as the parser reads it), so the value may hold
            # any other text. Strings with constraints (pattern, format, lengths …) are generated as JSON
            # strings instead, which parsing/tools_xml.py decodes for string parameters.
            self.rules.append(f'{rule}: {rule}_value "\\n"')
            self.rules.append(f"{rule}_value[lazy]: {head} /(.|\\n)*/ {_lit('</parameter>')}")
        else:
            self.rules.append(f"{rule}: {head} %json {json.dumps(with_layout(schema), ensure_ascii=False)} {tail}")
