"""Structured output and tool calling for one request: the spec's validation rules, the grammar that
enforces response_format / tool_choice (constrain/), and the parser that reads calls back (parsing/).

Decisions where the spec is silent are written down in docs/tools-and-structured-output.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qwenhost.constrain.grammar import ToolPlan, answer_schema, json_grammar, tools_grammar
from qwenhost.constrain.matcher import CompiledGrammar, tool_syntax
from qwenhost.constrain.schema import check_schema, tool_arguments_schema
from qwenhost.core.errors import AlgoInvalidParameter, InvalidParameter, NotSupported
from qwenhost.core.types import ChatRequest, NamedToolChoice
from qwenhost.engine.protocol import ConstraintFactory
from qwenhost.parsing.base import OutputParser, PlainParser
from qwenhost.parsing.tools import HermesToolParser
from qwenhost.parsing.tools_xml import XmlToolParser
from qwenhost.service.models import ServedModel

JSON_WORD = "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."


def has_tools(request: ChatRequest) -> bool:
    """Tools are offered to the model: given, and tool_choice is not "none" (spec §4.7)."""
    return bool(request.tools) and request.tool_choice != "none"


def check_request(request: ChatRequest) -> None:
    """The request-level rules of spec §3.3, §4.6, §4.7 (raised in prepare, before any byte). The
    thinking-mode refusals (json, forced tool_choice) are service/thinking.py's."""
    rf = request.response_format
    if rf is not None and rf.type == "json_object":
        said = " ".join(m.text() for m in request.messages if m.role in ("system", "user"))
        if "json" not in said.lower():
            raise AlgoInvalidParameter(JSON_WORD)
    if request.tool_choice == "required" and not request.tools:
        raise InvalidParameter("tool_choice 'required' needs at least one tool in 'tools'.")


def constraint_for(request: ChatRequest, model: ServedModel, prefix: str | None = None) -> ConstraintFactory | None:
    """The grammar for this request, compiled once; None when the output is free text.

    ``prefix`` is a partial-mode assistant prefix: the grammar starts after it.
    """
    schema = answer_schema(request.response_format)
    if request.response_format is not None and request.response_format.schema is not None and schema is not None:
        check_schema(schema, "response_format.json_schema.schema")
    tools = has_tools(request)
    if schema is None and not tools:
        return None
    tokenizer = model.backend.grammar_vocabulary()
    if tokenizer is None:
        if tools and schema is None and request.tool_choice == "auto":
            return None  # the parser still reads calls; nothing to enforce
        raise NotSupported("This model's backend cannot enforce response_format or a forced tool_choice.")
    if tools:
        for i, tool in enumerate(request.tools):
            check_schema(tool_arguments_schema(tool.parameters), f"tools[{i}].function.parameters")
        grammar = tools_grammar(_plan(request, model, tokenizer), schema)
    else:
        grammar = json_grammar(schema or {})
    compiled = CompiledGrammar(tokenizer, grammar)
    if prefix and not compiled.advance(prefix):
        raise InvalidParameter("The partial assistant message does not fit the requested output format.")
    return compiled


def _plan(request: ChatRequest, model: ServedModel, tokenizer: Any) -> ToolPlan:
    fmt = model.format
    info = model.backend.info
    syntax = tool_syntax(
        fmt.tool_syntax, fmt.tool_open, fmt.tool_close, tokenizer, info.special_tokens, info.end_tokens
    )
    choice = request.tool_choice
    assert choice != "none"
    return ToolPlan(tools=request.tools, choice=choice, is_parallel=request.parallel_tool_calls, syntax=syntax)


def answer_parser(request: ChatRequest, model: ServedModel, choice: int) -> OutputParser:
    """The parser for the answer part of one choice (a reasoning splitter may wrap it)."""
    if not has_tools(request):
        return PlainParser(choice)
    fmt = model.format
    # parallel_tool_calls=false (DashScope's default) returns at most one call (spec §4.7).
    # A named tool_choice is exactly one call of that tool.
    is_single = not request.parallel_tool_calls or isinstance(request.tool_choice, NamedToolChoice)
    max_calls = 1 if is_single else None
    if fmt.tool_syntax == "qwen_xml":
        tools: Mapping[str, Mapping[str, Any]] = {t.name: t.parameters for t in request.tools}
        return XmlToolParser(choice, tools, open_tag=fmt.tool_open, close_tag=fmt.tool_close, max_calls=max_calls)
    return HermesToolParser(choice, open_tag=fmt.tool_open, close_tag=fmt.tool_close, max_calls=max_calls)
