"""service/plan.py: the pure decisions for a request, made from a hand-built ModelSpec — no backend exists
in these tests, so the decisions provably need none."""

from __future__ import annotations

from typing import Any

import pytest

from qwenhost.api.wire.request import parse_chat_request
from qwenhost.core.errors import ServeError
from qwenhost.core.types import SamplingParams
from qwenhost.formats.registry import get_format
from qwenhost.service.models import ModelSpec
from qwenhost.service.plan import JSON_WORD, Plan, decide

USER = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}


def spec(family: str = "chatml", **kw: Any) -> ModelSpec:
    fmt = get_format(family)
    values: dict[str, Any] = {
        "name": "m",
        "format": fmt,
        "context_length": 1000,
        "max_output_tokens": 300,
        "thinking_default": fmt.thinking_default,
        "is_stream_only_thinking": False,
        "sampling": fmt.sampling,
        "sampling_thinking": fmt.sampling_thinking,
        "n_vocab": 500,
        "end_tokens": frozenset({2}),
    }
    values.update(kw)
    return ModelSpec(**values)


def plan(model: ModelSpec | None = None, **body: Any) -> Plan:
    body.setdefault("messages", USER)
    return decide(parse_chat_request({"model": "m", **body}), model or spec())


def refusal(model: ModelSpec | None = None, **body: Any) -> ServeError:
    with pytest.raises(ServeError) as err:
        plan(model, **body)
    return err.value


def test_thinking_is_decided_from_the_family_and_the_request() -> None:
    assert plan(spec("qwen3"), stream=True).is_thinking
    assert not plan(spec("qwen3"), enable_thinking=False).is_thinking
    assert plan(spec("qwen3"), stream=True, thinking_budget=9).thinking.budget == 9
    assert not plan(spec("chatml")).is_thinking
    assert plan(spec("qwen3"), enable_thinking=False).thinking.template_kwargs == {"enable_thinking": False}


def test_thinking_errors_come_before_every_other_refusal() -> None:
    # A request wrong in several ways gets the thinking error: it names the fix.
    err = refusal(spec("chatml"), enable_thinking=True, enable_search=True, max_tokens=10**6)
    assert err.message == "The model m does not support enable_thinking."
    assert err.code == "InvalidParameter.NotSupportEnableThinking"  # the catalogue's code (spec §3.2)


def test_what_a_model_reads_differently_is_noted_not_silent() -> None:
    assert plan(spec("chatml"), thinking_budget=50, reasoning_effort=None).notes == (
        "thinking_budget: the model does not think",
    )
    assert plan(spec("chatml"), reasoning_effort="none").notes == ()  # "none" is what a non-thinking model does
    assert plan(max_input_tokens=5000).notes == ("max_input_tokens=999: the model's prompt limit",)
    assert plan(max_input_tokens=500).notes == ()
    # A bad budget is refused on every model, thinking or not.
    assert "thinking_budget" in refusal(spec("chatml"), thinking_budget=0).message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"enable_search": True}, "This model does not support enable_search."),
        ({"enable_code_interpreter": True}, "This model does not support enable_code_interpreter."),
        # the preparer turns translation_options into the prompt first (service/translation.py): one that
        # reaches the plan was never handled, and is refused rather than ignored
        ({"translation_options": {"source_lang": "auto", "target_lang": "en"}}, "translation_options"),
        ({"tool_choice": "required"}, "tool_choice 'required' needs at least one tool"),
        ({"response_format": {"type": "json_object"}}, JSON_WORD),
        ({"max_tokens": 301}, "Range of max_tokens should be [1, 300]"),
        ({"max_completion_tokens": 0}, "Range of max_completion_tokens should be [1, 300]"),
        ({"logit_bias": {"500": 1}}, "logit_bias token ids should be in [0, 499]"),
    ],
)
def test_refusals_that_need_no_rendering(body: dict[str, Any], message: str) -> None:
    err = refusal(**body)
    assert err.status == 400 and message in err.message


def test_limits() -> None:
    p = plan(max_input_tokens=50)
    assert p.input_limit == 50
    p.check_input_length(50)
    with pytest.raises(ServeError, match=r"Range of input length should be \[1, 50\]"):
        p.check_input_length(51)
    assert plan().input_limit == 999  # context - 1
    # The engine's bound: the smallest of max_tokens, max_completion_tokens, the cap and the room left.
    p = plan(max_tokens=40, max_completion_tokens=60)
    assert p.max_new_tokens(100, answer_only=False)[0] == 40
    assert p.max_new_tokens(100, answer_only=True)[0] == 60  # max_tokens is the engine's to apply to the answer
    assert p.max_new_tokens(980, answer_only=False)[0] == 20
    assert p.max_new_tokens(1000, answer_only=False)[0] == 1
    assert plan().max_new_tokens(10, answer_only=False)[0] == 300
    # A limit the context cannot hold is lowered, and said so; the model's own cap is not the client's ask.
    assert p.max_new_tokens(980, answer_only=False)[1] == "max_tokens=20: the context left after the prompt"
    assert p.max_new_tokens(100, answer_only=False)[1] is None
    assert plan().max_new_tokens(990, answer_only=False) == (10, None)


def test_stops_split_into_engine_ids_and_text() -> None:
    p = plan(stop=[[7], [8, 9], [7]])
    assert p.stop_token_ids == ((7,), (7,)) and p.stop_id_sequences == ((8, 9),)
    assert plan(stop=["a", "b", "a"]).stop_strings == ("a", "b")


def test_sampling_per_choice() -> None:
    p = plan(n=3, seed=2**31 - 1, temperature=0.3)
    assert [s.seed for s in p.sampling] == [2**31 - 1, 0, 1]  # independent samples (spec §4.5)
    assert {s.temperature for s in p.sampling} == {0.3}
    banned = plan(ignore_eos=True).sampling[0]
    assert dict(banned.logit_bias) == {2: float("-inf")}
    tuned = plan(spec(sampling=SamplingParams(temperature=0.1))).sampling[0]
    assert tuned.temperature == 0.1


def test_constraint_and_tools() -> None:
    assert plan().constraint is None
    none = plan(tools=[TOOL], tool_choice="none")
    assert none.tools == () and none.constraint is None
    tools = plan(tools=[TOOL])
    assert tools.constraint is not None and tools.constraint.tools == tools.tools and tools.constraint.schema is None
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    given = plan(response_format=rf).constraint
    assert given is not None and given.is_schema_given and given.schema == schema
    json_object = plan(response_format={"type": "json_object"}, messages=[{"role": "user", "content": "JSON"}])
    assert json_object.constraint is not None and not json_object.constraint.is_schema_given
    partial = plan(messages=[*USER, {"role": "assistant", "content": "{", "partial": True}], response_format=rf)
    assert partial.partial_prefix == "{" and partial.constraint is not None and partial.constraint.prefix == "{"


def test_constraint_key_is_what_the_grammar_depends_on() -> None:
    def key(model: str = "m", **body: Any) -> str:
        constraint = plan(**body).constraint
        assert constraint is not None
        return constraint.key(model)

    props = {"a": {"type": "string"}, "b": {"type": "integer"}}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": props}}}
    swapped = dict(reversed(list(props.items())))
    other = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": swapped}}}
    described = {"type": "function", "function": {**tool["function"], "description": "ignored by the grammar"}}
    assert key(tools=[tool]) == key(tools=[described])
    assert key(tools=[tool]) != key(tools=[other])  # XML grammars list parameters in the schema's order
    assert key(tools=[tool]) != key("m2", tools=[tool])
    assert key(tools=[tool]) != key(tools=[tool], tool_choice="required")
    assert key(tools=[tool]) != key(tools=[tool], parallel_tool_calls=True)
    named = {"type": "function", "function": {"name": "f"}}
    assert key(tools=[tool], tool_choice=named) != key(tools=[tool], tool_choice="required")
