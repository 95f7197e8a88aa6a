"""Tool-call parsers: every case runs three chunkings (whole, per character, random splits) and the
folded results must agree (ARCHITECTURE.md, convention 3)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

import pytest

from qwenhost.core.events import ChatEvent, ContentDelta, FoldedAnswer, ToolCallArgsDelta, ToolCallStart, fold
from qwenhost.parsing.tools import HermesToolParser, TaggedToolParser
from qwenhost.parsing.tools_xml import XmlToolParser, coerce_value

ParserFactory = Callable[[Callable[[], str]], TaggedToolParser]


def _ids() -> Callable[[], str]:
    counter = iter(range(1000))
    return lambda: f"call_{next(counter)}"


def _chunkings(text: str) -> Iterator[list[str]]:
    yield [text]
    yield list(text)
    rng = random.Random(len(text))
    for _ in range(5):
        pieces, i = [], 0
        while i < len(text):
            n = rng.randint(1, 7)
            pieces.append(text[i : i + n])
            i += n
        yield pieces


def run_all(make: ParserFactory, text: str) -> tuple[FoldedAnswer, list[list[ChatEvent]]]:
    """Parse ``text`` under every chunking; assert equal folds; return the fold and each event list."""
    results, streams = [], []
    for pieces in _chunkings(text):
        parser = make(_ids())
        events: list[ChatEvent] = []
        for piece in pieces:
            events += parser.feed(piece)
        events += parser.finish()
        results.append(fold(events))
        streams.append(events)
    for other in results[1:]:
        assert other == results[0]
    return results[0], streams


def hermes(max_calls: int | None = None) -> ParserFactory:
    return lambda new_id: HermesToolParser(0, max_calls=max_calls, new_id=new_id)


def calls(answer: FoldedAnswer) -> list[tuple[str, str, str]]:
    return [(c.id, c.name, c.arguments) for c in answer.choices[0].tool_calls]


def content(answer: FoldedAnswer) -> str:
    return answer.choices[0].content if answer.choices else ""


WEATHER = '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "杭州"}}\n</tool_call>'


def test_a_close_tag_inside_an_argument_string_does_not_end_the_call() -> None:
    # SmolLM2 spells the tags out in plain text, so a grammar-valid string may hold "</tool_call>"; the call
    # used to end there and the rest of the string (a runaway loop) came out as content.
    text = (
        '<tool_call>\n{"name": "f", "arguments": {"a": "x</tool_call>y \\"q\\" </tool_call>", "b": 1}}\n'
        "</tool_call>\nafter"
    )
    answer, _ = run_all(hermes(), text)
    assert calls(answer) == [("call_0", "f", '{"a": "x</tool_call>y \\"q\\" </tool_call>", "b": 1}')]
    assert json.loads(calls(answer)[0][2])["a"] == 'x</tool_call>y "q" </tool_call>'
    assert content(answer) == "after"


def test_only_a_call_has_empty_content() -> None:
    answer, streams = run_all(hermes(), WEATHER)
    assert calls(answer) == [("call_0", "get_current_weather", '{"location": "杭州"}')]
    assert content(answer) == ""
    for events in streams:
        assert not any(isinstance(e, ContentDelta) for e in events)
        start = [e for e in events if isinstance(e, ToolCallStart)]
        assert len(start) == 1 and start[0].index == 0
        # The start comes before any argument text; the arguments stream in fragments.
        first_args = next(i for i, e in enumerate(events) if isinstance(e, ToolCallArgsDelta))
        assert events.index(start[0]) < first_args


def test_arguments_stream_before_the_close_tag() -> None:
    parser = HermesToolParser(0, new_id=_ids())
    events = parser.feed('<tool_call>\n{"name": "f", "arguments": {"a": "long te')
    assert isinstance(events[0], ToolCallStart) and events[0].name == "f"
    assert "".join(e.text for e in events if isinstance(e, ToolCallArgsDelta)) == '{"a": "long te'


def test_text_before_a_call_is_content_and_separating_whitespace_is_dropped() -> None:
    answer, _ = run_all(hermes(), "Let me check.\n\n" + WEATHER + "\n")
    assert content(answer) == "Let me check."
    assert calls(answer)[0][1] == "get_current_weather"


def test_plain_text_is_untouched_including_whitespace_and_angle_brackets() -> None:
    text = "a < b and <tool but not a call>\n  indented\n\n"
    answer, _ = run_all(hermes(), text)
    assert content(answer) == text
    assert calls(answer) == []


def test_parallel_calls_get_their_own_index() -> None:
    text = WEATHER + "\n" + '<tool_call>\n{"name": "get_current_time", "arguments": {}}\n</tool_call>'
    answer, streams = run_all(hermes(), text)
    assert [(n, a) for _, n, a in calls(answer)] == [
        ("get_current_weather", '{"location": "杭州"}'),
        ("get_current_time", "{}"),
    ]
    assert [e.index for e in streams[1] if isinstance(e, ToolCallStart)] == [0, 1]
    assert content(answer) == ""


def test_max_calls_drops_later_calls() -> None:
    text = WEATHER + "\n" + '<tool_call>\n{"name": "get_current_time", "arguments": {}}\n</tool_call>'
    answer, _ = run_all(hermes(max_calls=1), text)
    assert [n for _, n, _ in calls(answer)] == ["get_current_weather"]
    assert content(answer) == ""


def test_nested_arguments_and_braces_inside_strings() -> None:
    args = {"q": "a } b {", "n": {"x": [1, {"y": "}"}]}, "s": 'line\nbreak "quoted"'}
    text = f'<tool_call>\n{{"name": "search_docs", "arguments": {json.dumps(args)}}}\n</tool_call>'
    answer, _ = run_all(hermes(), text)
    assert json.loads(calls(answer)[0][2]) == args


def test_other_key_order_is_parsed_at_the_close_tag() -> None:
    text = '<tool_call>\n{"arguments": {"location": "Paris"}, "name": "get_current_weather"}\n</tool_call>'
    answer, _ = run_all(hermes(), text)
    assert calls(answer)[0][1:] == ("get_current_weather", '{"location": "Paris"}')


def test_missing_outer_brace_keeps_valid_arguments() -> None:
    text = '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'
    answer, _ = run_all(hermes(), text)
    assert calls(answer)[0][2] == '{"a": 1}'


def test_a_block_that_is_not_a_call_is_returned_as_text() -> None:
    text = "<tool_call>\nnot json at all\n</tool_call>"
    answer, _ = run_all(hermes(), text)
    assert calls(answer) == []
    assert content(answer) == text


def test_truncated_call_keeps_what_was_streamed() -> None:
    text = '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Han'
    answer, _ = run_all(hermes(), text)
    assert calls(answer) == [("call_0", "get_current_weather", '{"location": "Han')]


def test_truncated_before_the_name_is_content() -> None:
    answer, _ = run_all(hermes(), '<tool_call>\n{"na')
    assert calls(answer) == [] and content(answer) == '<tool_call>\n{"na'


def test_a_bad_escape_in_the_name_does_not_break_the_parser() -> None:
    answer, _ = run_all(hermes(), '<tool_call>\n{"name": "bad\\x", "arguments": {}}\n</tool_call>')
    assert calls(answer) == [] and content(answer).startswith("<tool_call>")


def test_text_after_a_call_is_content() -> None:
    answer, _ = run_all(hermes(), WEATHER + "\n\nDone.")
    assert content(answer) == "Done."


def test_escaped_name_and_unicode_arguments() -> None:
    text = '<tool_call>\n{"name": "say\\u005fhi", "arguments": {"t": "\\u4f60\\u597d"}}\n</tool_call>'
    answer, _ = run_all(hermes(), text)
    assert calls(answer)[0][1:] == ("say_hi", '{"t": "\\u4f60\\u597d"}')


TOOLS = {
    "get_weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "detailed": {"type": "boolean"},
            "hours": {"type": "array", "items": {"type": "integer"}},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
    },
    "now": {},
}


def xml() -> ParserFactory:
    return lambda new_id: XmlToolParser(0, TOOLS, new_id=new_id)


XML_CALL = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nSan Francisco\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n<parameter=detailed>\ntrue\n</parameter>\n"
    "<parameter=hours>\n[1, 2]\n</parameter>\n</function>\n</tool_call>"
)


def test_xml_call_with_typed_parameters() -> None:
    answer, streams = run_all(xml(), "Sure.\n" + XML_CALL)
    assert content(answer) == "Sure."
    (_, name, arguments) = calls(answer)[0]
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "San Francisco", "days": 3, "detailed": True, "hours": [1, 2]}
    per_char = [e.text for e in streams[1] if isinstance(e, ToolCallArgsDelta)]
    assert len(per_char) == 5  # one fragment per parameter, then the closing brace


def test_xml_parallel_and_empty_calls() -> None:
    text = XML_CALL + "\n<tool_call>\n<function=now>\n</function>\n</tool_call>"
    answer, _ = run_all(xml(), text)
    assert [(n, json.loads(a)) for _, n, a in calls(answer)][1] == ("now", {})


def test_xml_multiline_string_value_keeps_inner_newlines() -> None:
    text = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nline one\nline two\n</parameter>\n"
        "</function>\n</tool_call>"
    )
    answer, _ = run_all(xml(), text)
    assert json.loads(calls(answer)[0][2]) == {"city": "line one\nline two"}


def test_xml_without_function_tag_is_text() -> None:
    text = "<tool_call>\nhello\n</tool_call>"
    answer, _ = run_all(xml(), text)
    assert calls(answer) == [] and content(answer) == text


@pytest.mark.parametrize(
    ("raw", "schema", "value"),
    [
        ("3", {"type": "integer"}, 3),
        ("2.5", {"type": "number"}, 2.5),
        ("True", {"type": "boolean"}, True),
        ("007", {"type": "string"}, "007"),
        ('"ABC"', {"type": "string", "pattern": "^[A-Z]+$"}, "ABC"),
        ('{"a": 1}', {"type": "object"}, {"a": 1}),
        ("not json", {"type": "object"}, "not json"),
        ("12", None, 12),
        ("hello", None, "hello"),
        ("null", {"type": ["string", "null"]}, None),
    ],
)
def test_coerce_value(raw: str, schema: object, value: object) -> None:
    assert coerce_value(raw, schema) == value
