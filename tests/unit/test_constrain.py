"""constrain/: grammars for response_format and tool_choice, checked against real token streams.

Random walks sample uniformly among the tokens the mask allows (the worst possible "model"), so
every walk that ends must still produce output that validates; parsers then read the walk's text.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import jsonschema
import llguidance
import numpy as np
import pytest

from qwenhost.constrain.grammar import ToolPlan, ToolSyntax, answer_schema, json_grammar, tools_grammar
from qwenhost.constrain.matcher import CompiledGrammar, GrammarConstraint, tool_syntax
from qwenhost.constrain.schema import check_schema, tool_arguments_schema
from qwenhost.core.errors import InvalidParameter
from qwenhost.core.events import fold
from qwenhost.core.types import NamedToolChoice, ResponseFormat, ToolSpec
from qwenhost.parsing.tools import HermesToolParser
from qwenhost.parsing.tools_xml import XmlToolParser
from tests.support.grammar_vocab import ByteVocab, RealVocab, byte_vocab, embedded_vocab

WEATHER = ToolSpec(
    "get_current_weather",
    "天気",
    {
        "type": "object",
        "properties": {
            "location": {"type": "string", "maxLength": 6},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["location"],
    },
)
TIME = ToolSpec("get_current_time", "時刻", {})
TOOLS = (TIME, WEATHER)
NOTE = ToolSpec("take_note", "", {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})


@pytest.fixture(scope="module")
def real() -> RealVocab:
    return embedded_vocab()


@pytest.fixture(scope="module")
def byte() -> ByteVocab:
    return byte_vocab()


def walk(constraint: GrammarConstraint, eos: frozenset[int], rng: random.Random, max_steps: int = 400) -> list[int]:
    """Sample uniformly among allowed tokens until the grammar ends (or EOS is drawn)."""
    out: list[int] = []
    for _ in range(max_steps):
        forced = constraint.forced_tokens()
        if forced:
            token = forced[0]
        else:
            allowed = constraint.allowed_tokens()
            assert allowed is not None, "a constrained region must mask"
            token = int(rng.choice(np.flatnonzero(allowed)))
        constraint.consume(token)
        if token in eos:
            return out
        out.append(token)
        if constraint.is_finished():
            return out
    raise AssertionError("the walk did not end")


def accepts(vocab: RealVocab | ByteVocab, grammar: str, text: str, *, then_eos: bool = True) -> bool:
    matcher = llguidance.LLMatcher(vocab.tokenizer, grammar, log_level=0)
    ok = matcher.consume_tokens(vocab.tokenize(text)) and not matcher.is_error()
    if ok and then_eos:
        ok = matcher.consume_token(min(vocab.end_tokens)) and not matcher.is_error()
    return bool(ok)


def syntax_for(vocab: RealVocab | ByteVocab, kind: str = "hermes_json") -> ToolSyntax:
    return tool_syntax(kind, "<tool_call>", "</tool_call>", vocab.tokenizer, vocab.special_tokens, vocab.end_tokens)  # type: ignore[arg-type]


# -- response_format ------------------------------------------------------------------------------


def test_json_object_is_one_line_object(real: RealVocab) -> None:
    grammar = json_grammar(answer_schema(ResponseFormat("json_object")) or {})
    assert accepts(real, grammar, '{"a": 1, "b": [true, null]}')
    assert not accepts(real, grammar, "[1, 2]")
    assert not accepts(real, grammar, '{\n  "a": 1\n}')  # no free whitespace for a small model to loop on
    assert not accepts(real, grammar, '{"a": 1} trailing')


def test_unbounded_integers_get_at_most_18_digits(real: RealVocab, byte: ByteVocab) -> None:
    # pydantic-ai's final_result tool made the embedded model write a 7,900-digit integer until the context
    # was full: an integer the schema leaves unbounded now fits int64, in answers and in tool arguments.
    schema = {"type": "object", "properties": {"population": {"type": "integer"}}, "required": ["population"]}
    grammar = json_grammar(schema)
    assert accepts(real, grammar, '{"population": ' + "9" * 18 + "}")
    assert accepts(real, grammar, '{"population": -' + "9" * 18 + "}")
    assert not accepts(real, grammar, '{"population": ' + "1" * 19 + "}", then_eos=False)
    own = json_grammar({"type": "integer", "minimum": 5})  # the schema's own bound wins on its side
    assert accepts(real, own, "9" * 18) and not accepts(real, own, "4") and not accepts(real, own, "-1", then_eos=False)
    tool = ToolSpec("final_result", "", schema)
    plan = ToolPlan(tools=(tool,), choice="required", syntax=syntax_for(byte), is_parallel=False)
    walked = tools_grammar(plan, None)
    call = '<tool_call>\n{"name": "final_result", "arguments": {"population": ' + "7" * 19
    assert not accepts(byte, walked, call, then_eos=False)


def test_text_format_needs_no_grammar() -> None:
    assert answer_schema(None) is None
    assert answer_schema(ResponseFormat("text")) is None
    assert answer_schema(ResponseFormat("json_schema")) == {"type": "object"}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "pet": {
            "type": "object",
            "properties": {"kind": {"enum": ["cat", "dog"]}, "good": {"type": "boolean"}},
            "required": ["kind", "good"],
            "additionalProperties": False,
        },
        "email": {"type": "string", "format": "email", "maxLength": 12},
    },
    "required": ["name", "age", "pet"],
    "additionalProperties": False,
}


def test_random_walks_of_a_schema_always_validate(real: RealVocab) -> None:
    compiled = CompiledGrammar(real.tokenizer, json_grammar(SCHEMA))
    for seed in range(12):
        tokens = walk(compiled(), real.end_tokens, random.Random(seed))
        jsonschema.validate(json.loads(real.tokenizer.decode_str(tokens)), SCHEMA)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, '"if", "then"'),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, '"uniqueItems"'),
        ({"type": "object", "propertyNames": {"pattern": "^a"}}, '"propertyNames"'),
        ({"type": "string", "format": "no-such-format"}, "no-such-format"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf"),
    ],
)
def test_unsupported_keywords_are_a_400_naming_them(schema: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        check_schema(schema, "response_format.json_schema.schema")
    assert named in caught.value.message
    assert caught.value.message.startswith("response_format.json_schema.schema")


def test_supported_schemas_pass_the_check() -> None:
    check_schema(SCHEMA, "x")
    check_schema({"$defs": {"n": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/$defs/n"}}, "x")
    check_schema({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "x")


# -- tool argument schemas ------------------------------------------------------------------------


def test_empty_parameters_mean_no_arguments() -> None:
    assert tool_arguments_schema({}) == {"type": "object", "properties": {}, "additionalProperties": False}


def test_declared_objects_are_closed_but_open_ones_and_combinators_are_kept() -> None:
    schema = tool_arguments_schema(
        {
            "properties": {
                "a": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "b": {"type": "object", "additionalProperties": {"type": "string"}},
                "c": {"anyOf": [{"type": "object", "properties": {"y": {}}}]},
                "d": {"type": "array", "items": {"type": "object", "properties": {"z": {}}}},
            }
        }
    )
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["a"]["additionalProperties"] is False
    assert props["b"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in props["c"]["anyOf"][0]
    assert props["d"]["items"]["additionalProperties"] is False


def test_required_names_missing_from_properties_leave_the_object_open() -> None:
    schema = tool_arguments_schema({"type": "object", "properties": {"a": {}}, "required": ["b"]})
    assert "additionalProperties" not in schema
    check_schema(schema, "tools[0].function.parameters")


# -- tool grammars on the real vocabulary (literal tags: a lazy trigger) ---------------------------


def test_auto_leaves_text_free_until_the_tag(real: RealVocab) -> None:
    syntax = syntax_for(real)
    assert syntax.open_token is None  # SmolLM2 spells <tool_call> out
    grammar = tools_grammar(ToolPlan(TOOLS, "auto", False, syntax))
    assert accepts(real, grammar, "Any text at all, even { or <tool or </tool_call>.")
    call = '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "杭州"}}\n</tool_call>'
    assert accepts(real, grammar, "Let me look.\n" + call)
    assert not accepts(real, grammar, "<tool_call>\nnot json", then_eos=False)
    assert not accepts(real, grammar, '<tool_call>\n{"name": "unknown_tool", "arguments": {}}', then_eos=False)
    assert not accepts(real, grammar, call + "\n" + call, then_eos=False)  # parallel_tool_calls=false
    parallel = tools_grammar(ToolPlan(TOOLS, "auto", True, syntax))
    assert accepts(real, parallel, call + "\n" + call)


def test_once_the_tag_appears_the_call_is_forced(real: RealVocab) -> None:
    constraint = CompiledGrammar(real.tokenizer, tools_grammar(ToolPlan(TOOLS, "auto", False, syntax_for(real))))()
    free = constraint.allowed_tokens()  # free text: only stray UTF-8 continuation bytes are refused
    assert free is None or free.sum() > 0.99 * len(free)
    for token in real.tokenize("Sure. <tool_call>"):
        constraint.consume(token)
    forced = real.tokenizer.decode_str(constraint.forced_tokens())
    assert '\n{"name": "get_current_'.startswith(forced) and forced


def walk_calls(vocab: RealVocab | ByteVocab, plan: ToolPlan, seeds: range, prefix: str = "") -> Iterator[str]:
    compiled = CompiledGrammar(vocab.tokenizer, tools_grammar(plan))
    if prefix:
        advanced = compiled.after(prefix)
        assert advanced is not None
        compiled = advanced
    for seed in seeds:
        yield prefix + vocab.tokenizer.decode_str(walk(compiled(), vocab.end_tokens, random.Random(seed)))


def parsed_calls(text: str, kind: str = "hermes_json") -> list[tuple[str, Any]]:
    tools = {t.name: t.parameters for t in (*TOOLS, NOTE)}
    parser = XmlToolParser(0, tools) if kind == "qwen_xml" else HermesToolParser(0)
    answer = fold(parser.feed(text) + parser.finish())
    assert answer.choices[0].content == ""
    return [(c.name, json.loads(c.arguments)) for c in answer.choices[0].tool_calls]


def check_arguments(name: str, arguments: Any) -> None:
    spec = next(t for t in TOOLS if t.name == name)
    jsonschema.validate(arguments, spec.parameters or {"type": "object", "maxProperties": 0})


def test_named_choice_walks_are_one_valid_call(real: RealVocab) -> None:
    plan = ToolPlan(TOOLS, NamedToolChoice("get_current_weather"), True, syntax_for(real))
    for text in walk_calls(real, plan, range(10)):
        found = parsed_calls(text)
        assert len(found) == 1 and found[0][0] == "get_current_weather"
        check_arguments(*found[0])


def test_lazy_trigger_walks_complete_a_valid_call(real: RealVocab) -> None:
    plan = ToolPlan(TOOLS, "auto", False, syntax_for(real))
    for text in walk_calls(real, plan, range(10), prefix="I will call a tool.\n<tool_call>"):
        found = parsed_calls(text.removeprefix("I will call a tool.\n"))
        assert len(found) == 1
        check_arguments(*found[0])


# -- special-token tags (Qwen2.5/Qwen3 vocabularies), XML bodies -----------------------------------


def test_special_tags_and_think_tokens(byte: ByteVocab) -> None:
    syntax = syntax_for(byte)
    assert syntax.open_token == byte.special_tokens["<tool_call>"]
    assert byte.special_tokens["<think>"] in syntax.text_special_tokens
    assert byte.special_tokens["<|im_end|>"] not in syntax.text_special_tokens
    grammar = tools_grammar(ToolPlan(TOOLS, "auto", False, syntax))
    call = '<tool_call>\n{"name": "get_current_time", "arguments": {}}\n</tool_call>'
    assert accepts(byte, grammar, "<think>\nhmm\n</think>\n\n" + call)
    assert accepts(byte, grammar, "<think>\nhmm\n</think>\n\nJust text.")
    assert not accepts(byte, grammar, call.replace("{}", "{}x"), then_eos=False)


def test_required_forces_a_call_first(byte: ByteVocab) -> None:
    grammar = tools_grammar(ToolPlan(TOOLS, "required", True, syntax_for(byte)))
    call = '<tool_call>\n{"name": "get_current_time", "arguments": {}}\n</tool_call>'
    assert accepts(byte, grammar, call + "\n" + call)
    assert not accepts(byte, grammar, "text first", then_eos=False)


def test_json_answer_or_call(byte: ByteVocab) -> None:
    grammar = tools_grammar(ToolPlan(TOOLS, "auto", False, syntax_for(byte)), {"type": "object"})
    assert accepts(byte, grammar, '{"answer": 42}')
    assert accepts(byte, grammar, '<tool_call>\n{"name": "get_current_time", "arguments": {}}\n</tool_call>')
    assert not accepts(byte, grammar, "plain text", then_eos=False)


def test_xml_grammar_and_parser_agree(byte: ByteVocab) -> None:
    syntax = syntax_for(byte, "qwen_xml")
    grammar = tools_grammar(ToolPlan((*TOOLS, NOTE), "auto", True, syntax))
    text = (
        '<tool_call>\n<function=get_current_weather>\n<parameter=location>\n"杭州"\n</parameter>\n'
        "<parameter=unit>\ncelsius\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=get_current_time>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=take_note>\n<parameter=text>\nraw < text\n\nover lines\n</parameter>\n"
        "</function>\n</tool_call>"
    )
    assert accepts(byte, grammar, text)
    assert parsed_calls(text, "qwen_xml") == [
        ("get_current_weather", {"location": "杭州", "unit": "celsius", "days": 3}),
        ("get_current_time", {}),
        ("take_note", {"text": "raw < text\n\nover lines"}),
    ]
    too_long = text.replace('"杭州"', '"San Francisco"')  # maxLength 6: the string is generated as JSON
    assert not accepts(byte, grammar, too_long, then_eos=False)
    assert not accepts(byte, grammar, text.replace("celsius", "kelvin"), then_eos=False)
    assert not accepts(byte, grammar, text.replace("\n3\n", "\nthree\n"), then_eos=False)
    missing = "<tool_call>\n<function=get_current_weather>\n</function>"
    assert not accepts(byte, grammar, missing, then_eos=False)  # location is required


def test_xml_named_walks_parse_and_validate(byte: ByteVocab) -> None:
    plan = ToolPlan(TOOLS, NamedToolChoice("get_current_weather"), False, syntax_for(byte, "qwen_xml"))
    for text in walk_calls(byte, plan, range(10)):
        found = parsed_calls(text, "qwen_xml")
        assert len(found) == 1
        check_arguments(*found[0])
