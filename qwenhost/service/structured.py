"""Structured output and tool calling for one request: the grammar that enforces response_format /
tool_choice (constrain/, compiled once per key and cached), and the parser that reads calls back
(parsing/). The request-level rules are service/plan.py's.

Decisions where the spec is silent are written down in docs/tools-and-structured-output.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from qwenhost.constrain.cache import GrammarCache
from qwenhost.constrain.grammar import ToolPlan, json_grammar, tools_grammar
from qwenhost.constrain.matcher import CompiledGrammar, tool_syntax
from qwenhost.constrain.schema import check_schema, tool_arguments_schema
from qwenhost.core.errors import InvalidParameter, NotSupported
from qwenhost.core.types import ChatRequest, NamedToolChoice
from qwenhost.engine.protocol import ConstraintFactory, GrammarVocabulary
from qwenhost.parsing.base import OutputParser, PlainParser
from qwenhost.parsing.tools import HermesToolParser
from qwenhost.parsing.tools_xml import XmlToolParser
from qwenhost.service.models import ServedModel
from qwenhost.service.plan import ConstraintSpec

UNENFORCEABLE = "This model's backend cannot enforce response_format or a forced tool_choice."
BROKEN_PREFIX = "The partial assistant message does not fit the requested output format."
VocabularySource = Callable[[], GrammarVocabulary | None]


def has_tools(request: ChatRequest) -> bool:
    """Tools are offered to the model: given, and tool_choice is not "none" (spec §4.7)."""
    return bool(request.tools) and request.tool_choice != "none"


def compile_constraint(
    spec: ConstraintSpec, model: ServedModel, vocabulary: VocabularySource, cache: GrammarCache
) -> ConstraintFactory | None:
    """The grammar for ``spec`` on ``model``: from the cache, or checked and compiled (then cached); None
    when nothing needs enforcing. ``vocabulary`` is called only on a miss (it may wait for the build)."""
    key = spec.key(model.name)
    compiled = cache.get(key)
    if compiled is None:
        if spec.is_schema_given and spec.schema is not None:
            check_schema(spec.schema, "response_format.json_schema.schema")
        tokenizer: Any = vocabulary()  # an opaque handle that constrain/ compiles against
        if tokenizer is None:
            if spec.tools and spec.schema is None and spec.choice == "auto":
                return None  # the parser still reads calls; nothing to enforce
            raise NotSupported(UNENFORCEABLE)
        compiled = cache.put(key, CompiledGrammar(tokenizer, _grammar(spec, model, tokenizer)))
    if spec.prefix:
        advanced = compiled.after(spec.prefix)
        if advanced is None:
            raise InvalidParameter(BROKEN_PREFIX)
        return advanced
    return compiled


def _grammar(spec: ConstraintSpec, model: ServedModel, tokenizer: Any) -> str:
    if not spec.tools:
        return json_grammar(spec.schema or {})
    for i, tool in enumerate(spec.tools):
        check_schema(tool_arguments_schema(tool.parameters), f"tools[{i}].function.parameters")
    fmt = model.format
    info = model.backend.info
    syntax = tool_syntax(
        fmt.tool_syntax, fmt.tool_open, fmt.tool_close, tokenizer, info.special_tokens, info.end_tokens
    )
    choice = spec.choice
    assert choice != "none"
    plan = ToolPlan(tools=spec.tools, choice=choice, is_parallel=spec.is_parallel, syntax=syntax)
    return tools_grammar(plan, spec.schema)


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
