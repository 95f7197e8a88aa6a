"""service/thinking.py and service/turn.py through ChatService.prepare()/run() on the FakeBackend
(one token per character, so the prompt text is visible and exact)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qwenhost.api.wire.request import parse_chat_request
from qwenhost.config import ModelConfig
from qwenhost.core.errors import ServeError
from qwenhost.core.events import FoldedAnswer, afold
from qwenhost.core.types import SamplingOverrides
from qwenhost.engine.fake import FAKE_TEMPLATE, FakeBackend
from qwenhost.engine.protocol import GenerationRequest
from qwenhost.main import served_model
from qwenhost.service.chat import ChatService, Job
from qwenhost.service.models import ModelRegistry, ServedModel
from qwenhost.service.thinking import soft_switch
from qwenhost.templates.renderer import builtin_template

QWEN3_TEMPLATE = builtin_template("qwen3")
USER = [{"role": "user", "content": "Hi"}]


def served(template: str = QWEN3_TEMPLATE, script: str = "ok", **config: Any) -> ServedModel:
    backend = FakeBackend(chat_template=template, script=lambda r, c: script, context_length=2048)
    return served_model(ModelConfig(name="m", path="unused.gguf", **config), backend)


def prepare(model: ServedModel, **body: Any) -> Job:
    body.setdefault("messages", USER)
    return ChatService(ModelRegistry([model])).prepare(parse_chat_request({"model": "m", **body}), request_id="r1")


def answer(model: ServedModel, **body: Any) -> FoldedAnswer:
    service = ChatService(ModelRegistry([model]))
    body.setdefault("messages", USER)
    job = service.prepare(parse_chat_request({"model": "m", **body}), request_id="r1")
    return asyncio.run(afold(service.run(job)))


def refused(model: ServedModel, **body: Any) -> str:
    with pytest.raises(ServeError) as err:
        prepare(model, **body)
    assert err.value.status == 400 and err.value.code.lower().startswith("invalid")
    return err.value.message


def gen(job: Job) -> GenerationRequest:
    return job.generation


# -- on, off, soft switch, thinking-only -------------------------------------------------------------
def test_hybrid_default_is_on_and_the_model_opens_the_thought() -> None:
    job = prepare(served(), stream=True)
    assert job.is_thinking and job.thought == "open"
    assert job.prompt.text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    budget = gen(job).reasoning_budget
    assert budget is not None and not budget.open_at_start
    assert budget.open_tokens == tuple(map(ord, "<think>")) and budget.close_tokens == tuple(map(ord, "</think>"))
    assert budget.open_text == b"<think>" and budget.close_text == b"</think>"  # the tracker matches these


def test_enable_thinking_false_closes_an_empty_thought_in_the_prompt() -> None:
    job = prepare(served(), enable_thinking=False, max_tokens=7)
    assert not job.is_thinking and job.thought == "closed"
    assert job.prompt.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert gen(job).reasoning_budget is None and gen(job).max_new_tokens == 7


def test_a_template_that_ignores_enable_thinking_still_gets_the_empty_thought() -> None:
    job = prepare(served(FAKE_TEMPLATE, family="qwen3"), enable_thinking=False)
    assert job.prompt.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["Hi /no_think"], False),
        (["/think hard", "then /no_think"], False),
        (["/no_think", "now /think"], True),
        (["/no_think please /think"], True),
        (["see a/think or /thinking or /no_thinker"], None),
        (["nothing"], None),
    ],
)
def test_soft_switch_latest_wins(texts: list[str], expected: bool | None) -> None:
    from qwenhost.core.types import Message

    messages = tuple(Message(role="user", content=t) for t in texts)
    assert soft_switch(messages) is expected


def test_soft_switch_turns_thinking_off_and_on() -> None:
    off = prepare(served(), messages=[{"role": "user", "content": "Hi /no_think"}])
    assert not off.is_thinking and off.prompt.text.endswith("</think>\n\n")
    on = prepare(served(thinking_default=False), stream=True, messages=[{"role": "user", "content": "Hi /think"}])
    assert on.is_thinking
    hard_off = prepare(served(), enable_thinking=False, messages=[{"role": "user", "content": "Hi /think"}])
    assert not hard_off.is_thinking
    # Families without the soft switch ignore it (Qwen3.5, spec §4.4).
    qwen35 = prepare(served(family="qwen3.5"), stream=True, messages=[{"role": "user", "content": "Hi /no_think"}])
    assert qwen35.is_thinking


def test_thinking_only_families_open_the_thought_in_the_prompt() -> None:
    for family in ("qwq", "qwen3-thinking-2507"):
        model = served(family=family)
        job = prepare(model, stream=True)
        assert job.is_thinking and job.thought == "inside"
        assert job.prompt.text.endswith("<|im_start|>assistant\n<think>\n")
        budget = gen(job).reasoning_budget
        assert budget is not None and budget.open_at_start
        msg = "The value of the enable_thinking parameter is restricted to True."
        assert refused(model, stream=True, enable_thinking=False) == msg
        assert refused(model, stream=True, reasoning_effort="none") == msg


def test_qwen35_prefills_the_thought_and_closes_it_when_off() -> None:
    model = served(family="qwen3.5")
    assert prepare(model, stream=True).prompt.text.endswith("assistant\n<think>\n")
    assert prepare(model, enable_thinking=False).prompt.text.endswith("assistant\n<think>\n\n</think>\n\n")


def test_models_without_thinking() -> None:
    model = served(FAKE_TEMPLATE)
    assert model.format.name == "chatml"
    assert refused(model, enable_thinking=True) == "The model m does not support enable_thinking."
    job = prepare(model, enable_thinking=False, thinking_budget=5)
    assert not job.is_thinking and gen(job).reasoning_budget is None
    assert job.notes == ("thinking_budget: the model does not think",)


# -- incompatibilities ---------------------------------------------------------------------------
TOOLS = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"stream": False}, "parameter.enable_thinking must be set to false for non-streaming calls"),
        (
            {"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "json"}]},
            "Json mode response is not supported when enable_thinking is true",
        ),
        (
            {"messages": [*USER, {"role": "assistant", "content": "Pre", "partial": True}]},
            "Partial mode is not supported when enable_thinking is true",
        ),
        (
            {"tools": TOOLS, "tool_choice": "required"},
            "The tool_choice parameter does not support being set to required or object in thinking mode",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "f"}}},
            "The tool_choice parameter does not support being set to required or object in thinking mode",
        ),
        ({"n": 2}, "The n parameter must be 1 when enable_thinking is true."),
        ({"thinking_budget": 0}, "The thinking_budget parameter must be a positive integer and not greater than 2048"),
        (
            {"thinking_budget": 2049},
            "The thinking_budget parameter must be a positive integer and not greater than 2048",
        ),
        (
            {"reasoning_effort": "huge"},
            "Unexpected reasoning effort huge. Supported types are xhigh (default), medium, and low.",
        ),
        (
            {"reasoning_effort": "low", "thinking_budget": 9},
            "reasoning_effort and thinking_budget cannot be set at the same time.",
        ),
    ],
)
def test_thinking_incompatibilities(body: dict[str, Any], message: str) -> None:
    body = {"stream": True, **body}
    assert refused(served(), **body) == message
    # The same requests with thinking off are accepted (or refused for another reason, never this one).
    try:
        prepare(served(), **{**body, "enable_thinking": False})
    except ServeError as exc:
        assert exc.message != message or "thinking_budget" in message or "effort" in message


def test_stream_only_is_per_family_and_configurable() -> None:
    qwq = "This model only support stream mode, please enable the stream parameter to access the model."
    assert refused(served(family="qwq")) == qwq
    assert prepare(served(stream_only_thinking=False)).is_thinking
    assert not served(family="qwen3.5").is_stream_only_thinking


# -- budget, effort, max_tokens ------------------------------------------------------------------
def test_budget_and_effort_reach_the_engine() -> None:
    assert gen(prepare(served(), stream=True, thinking_budget=64)).reasoning_budget.budget == 64  # type: ignore[union-attr]
    assert gen(prepare(served(), stream=True, reasoning_effort="low")).reasoning_budget.budget == 4096  # type: ignore[union-attr]
    assert gen(prepare(served(), stream=True, reasoning_effort="xhigh")).reasoning_budget.budget is None  # type: ignore[union-attr]
    assert not prepare(served(), reasoning_effort="none").is_thinking


def test_max_tokens_bounds_only_the_answer_when_thinking() -> None:
    job = prepare(served(), stream=True, max_tokens=5)
    room = 2048 - len(job.prompt.tokens)
    assert gen(job).max_new_tokens == room
    assert gen(job).reasoning_budget.max_answer_tokens == 5  # type: ignore[union-attr]
    capped = prepare(served(), stream=True, max_tokens=5, max_completion_tokens=40)
    assert gen(capped).max_new_tokens == 40  # max_completion_tokens bounds thought + answer (spec §1.3 #15)


# -- sampling defaults ---------------------------------------------------------------------------
def test_sampling_defaults_per_mode_with_config_over_family() -> None:
    on = gen(prepare(served(), stream=True)).sampling[0]
    off = gen(prepare(served(), enable_thinking=False)).sampling[0]
    assert (on.temperature, on.top_p, on.presence_penalty) == (0.6, 0.95, 0.5)
    assert (off.temperature, off.top_p, off.presence_penalty) == (0.7, 0.8, 1.5)
    model = served(sampling_thinking=SamplingOverrides(temperature=1.1))
    tuned = gen(prepare(model, stream=True)).sampling[0]
    assert (tuned.temperature, tuned.top_p) == (1.1, 0.95)
    assert gen(prepare(model, enable_thinking=False)).sampling[0].temperature == 0.7
    assert gen(prepare(model, stream=True, temperature=0.2)).sampling[0].temperature == 0.2


# -- partial mode --------------------------------------------------------------------------------
PARTIAL = [*USER, {"role": "assistant", "content": "Once upon", "partial": True}]


def test_partial_prompt_ends_with_the_prefix_inside_the_open_turn() -> None:
    job = prepare(served(), enable_thinking=False, messages=PARTIAL)
    assert job.prompt.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nOnce upon")
    chatml = prepare(served(FAKE_TEMPLATE), messages=PARTIAL)
    assert chatml.prompt.text.endswith("<|im_start|>assistant\nOnce upon")
    assert "<|im_end|>" not in chatml.prompt.text.rsplit("<|im_start|>assistant", 1)[1]
    full = prepare(served(FAKE_TEMPLATE), messages=[*USER, {"role": "assistant", "content": "Once upon"}])
    assert full.prompt.text.endswith("Once upon<|im_end|>\n<|im_start|>assistant\n")


def test_partial_answer_holds_only_the_continuation() -> None:
    result = answer(served(FAKE_TEMPLATE, script="\n a time"), messages=PARTIAL)
    assert result.choices[0].content == "\n a time"  # leading newline kept: the answer was not a new turn
    assert result.choices[0].reasoning_content is None


# -- preserve_thinking ---------------------------------------------------------------------------
HISTORY = [
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
    {"role": "user", "content": "Q2"},
]
NO_PRESERVE_TEMPLATE = QWEN3_TEMPLATE.replace("preserve_thinking", "keep_thoughts")


def test_preserve_thinking_keeps_history_thoughts() -> None:
    plain = prepare(served(), enable_thinking=False, messages=HISTORY)
    assert "R1" not in plain.prompt.text
    kept = prepare(served(), enable_thinking=False, messages=HISTORY, preserve_thinking=True)
    assert "<|im_start|>assistant\n<think>\nR1\n</think>\n\nA1<|im_end|>" in kept.prompt.text
    # A JSON-tool family whose template does not know the variable falls back to the built-in one.
    fallback = prepare(served(NO_PRESERVE_TEMPLATE), enable_thinking=False, messages=HISTORY, preserve_thinking=True)
    assert "<think>\nR1\n</think>" in fallback.prompt.text
    xml = served(NO_PRESERVE_TEMPLATE, family="qwen3.5")
    msg = "preserve_thinking is not supported by this model's chat template."
    assert refused(xml, enable_thinking=False, messages=HISTORY, preserve_thinking=True) == msg


# -- the answer ----------------------------------------------------------------------------------
def test_thinking_answer_is_split_and_counted() -> None:
    model = served(script="<think>\nhm\n</think>\n\nok", stream_only_thinking=False)
    result = answer(model)
    choice = result.choices[0]
    assert (choice.reasoning_content, choice.content, choice.finish_reason) == ("hm", "ok", "stop")
    usage = result.usage
    assert usage is not None and usage.completion_tokens == len("<think>\nhm\n</think>\n\nok") + 1  # + end token
    # Thought tokens: "\nhm\n" and the close tag's leading characters, held inside the thought (not ">").
    assert usage.reasoning_tokens == len("\nhm\n") + len("</think")


def test_thinking_answer_without_a_thought_has_empty_reasoning() -> None:
    result = answer(served(script="direct", stream_only_thinking=False))
    assert (result.choices[0].reasoning_content, result.choices[0].content) == ("", "direct")
    assert result.usage is not None and result.usage.reasoning_tokens == 0


def test_non_thinking_answer_has_no_reasoning_fields() -> None:
    result = answer(served(script="plain"), enable_thinking=False)
    assert result.choices[0].reasoning_content is None and result.usage is not None
    assert result.usage.reasoning_tokens is None
