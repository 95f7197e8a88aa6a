"""The pure decisions for one request — thinking, tools, limits, stops, sampling — made from the request and
the model's spec alone (no backend, template or tokenizer), so every request-level error that needs no
rendering is raised here first, before any template, tokenizer, grammar or media work."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qwenhost.constrain.grammar import answer_schema
from qwenhost.core.errors import AlgoInvalidParameter, InvalidParameter, NotSupported
from qwenhost.core.types import ChatRequest, NamedToolChoice, SamplingParams, ToolChoice, ToolSpec
from qwenhost.media.errors import INPUT_LENGTH
from qwenhost.service.models import ModelSpec
from qwenhost.service.thinking import ThinkingPlan, plan_thinking

SEED_MODULUS = 2**31
JSON_WORD = "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."


@dataclass(frozen=True, slots=True)
class ConstraintSpec:
    """What the output must follow (constrain/ compiles it): an answer schema, the offered tools, or both."""

    schema: Mapping[str, Any] | None  # the answer's JSON Schema; None: free text (or tool calls)
    is_schema_given: bool  # response_format carried its own schema (checked, and named in its errors)
    tools: tuple[ToolSpec, ...]
    choice: ToolChoice
    is_parallel: bool
    prefix: str | None  # a partial-mode assistant prefix: the grammar starts after it

    def key(self, model_name: str) -> str:
        """Everything the compiled grammar depends on (the model names its vocabulary and tool syntax).
        Key order is kept: a qwen_xml grammar lists parameters in the schema's own order."""
        choice = self.choice.name if isinstance(self.choice, NamedToolChoice) else None
        return json.dumps(
            [
                model_name,
                self.schema,
                [[t.name, t.parameters] for t in self.tools],
                self.choice if choice is None else {"function": choice},
                self.is_parallel,
            ],
            default=repr,  # mappings the request built (MappingProxy …) still key by their content
        )


@dataclass(frozen=True, slots=True)
class Plan:
    thinking: ThinkingPlan
    tools: tuple[ToolSpec, ...]  # offered to the model (empty when tool_choice is "none")
    partial_prefix: str | None  # the last assistant message, continued (partial mode, spec §4.1)
    constraint: ConstraintSpec | None
    input_limit: int
    output_cap: int  # max_output_tokens of the model
    context_length: int
    max_tokens: int | None
    max_completion_tokens: int | None
    stop_strings: tuple[str, ...]  # the request's strings, then the family's
    stop_token_ids: tuple[tuple[int, ...], ...]  # single ids: the engine ends the choice on them
    stop_id_sequences: tuple[tuple[int, ...], ...]  # longer id sequences: matched as their text
    sampling: tuple[SamplingParams, ...]  # one per choice
    top_logprobs: int | None
    notes: tuple[str, ...] = ()  # what was read differently from what was asked (x-qwenhost-adjusted)

    @property
    def is_thinking(self) -> bool:
        return self.thinking.is_thinking

    def check_input_length(self, num_tokens: int) -> None:
        if not 1 <= num_tokens <= self.input_limit:
            raise InvalidParameter(INPUT_LENGTH.format(self.input_limit))

    def max_new_tokens(self, num_prompt: int, *, answer_only: bool) -> tuple[int, str | None]:
        """The engine's bound for a prompt of ``num_prompt`` tokens, and a note when the context left after
        the prompt is less than the request's own limit. When the engine follows a thought, max_tokens bounds
        only the answer (spec §1.3 #14) and is left to the engine."""
        answer_cap = None if answer_only else self.max_tokens
        wanted = min(v for v in (answer_cap, self.max_completion_tokens, self.output_cap) if v is not None)
        room = max(1, self.context_length - num_prompt)
        if wanted <= room:
            return wanted, None
        limits = (("max_tokens", answer_cap), ("max_completion_tokens", self.max_completion_tokens))
        asked = next((key for key, value in limits if value is not None and value > room), None)
        return room, f"{asked}={room}: the context left after the prompt" if asked else None


def decide(request: ChatRequest, model: ModelSpec) -> Plan:
    """The plan for ``request`` on ``model``, or the request-level error it deserves (cheapest first)."""
    thinking = plan_thinking(request, model)  # thinking errors first: they name the fix (enable_thinking)
    refuse_unsupported(request)
    check_structured(request)
    _check_output_limits(request, model)
    tools = request.tools if request.tool_choice != "none" else ()
    partial = request.messages[-1].text() if request.is_partial else None
    return Plan(
        thinking=thinking,
        tools=tools,
        partial_prefix=partial,
        constraint=_constraint(request, tools, partial),
        input_limit=input_limit(request, model.max_input_tokens),
        notes=thinking.notes + _input_limit_note(request, model.max_input_tokens),
        output_cap=model.max_output_tokens,
        context_length=model.context_length,
        max_tokens=request.max_tokens,
        max_completion_tokens=request.max_completion_tokens,
        stop_strings=tuple(dict.fromkeys((*request.stop.strings, *model.format.stop_strings))),
        stop_token_ids=tuple(s for s in request.stop.token_sequences if len(s) == 1),
        stop_id_sequences=tuple(s for s in request.stop.token_sequences if len(s) > 1),
        sampling=_sampling(request, model, thinking.is_thinking),
        top_logprobs=request.top_logprobs if request.logprobs else None,
    )


def refuse_unsupported(request: ChatRequest) -> None:
    """Parameters whose feature is not built yet are refused clearly, never silently ignored."""
    if request.enable_search:
        raise NotSupported("This model does not support enable_search.")
    if request.enable_code_interpreter:
        raise NotSupported("This model does not support enable_code_interpreter.")
    # Audio output is the preparer's (it knows whether a speech engine runs); translation_options are turned
    # into the prompt before planning (service/translation.py), so one left here was never handled.
    if request.translation_options is not None:
        raise NotSupported("This model does not support translation_options.")


def check_structured(request: ChatRequest) -> None:
    """The request-level rules of spec §3.3, §4.6, §4.7. The thinking-mode refusals (json, forced
    tool_choice) are service/thinking.py's; schemas are checked where they are compiled (on a cache miss)."""
    rf = request.response_format
    if rf is not None and rf.type == "json_object":
        said = " ".join(m.text() for m in request.messages if m.role in ("system", "user"))
        if "json" not in said.lower():
            raise AlgoInvalidParameter(JSON_WORD)
    if request.tool_choice == "required" and not request.tools:
        raise InvalidParameter("tool_choice 'required' needs at least one tool in 'tools'.")


def _check_output_limits(request: ChatRequest, model: ModelSpec) -> None:
    cap = model.max_output_tokens
    for name, value in (
        ("max_tokens", request.max_tokens),
        ("max_completion_tokens", request.max_completion_tokens),
    ):
        if value is not None and not 1 <= value <= cap:
            raise InvalidParameter(f"Range of {name} should be [1, {cap}]")


def input_limit(request: ChatRequest, model_limit: int) -> int:
    """The prompt's token limit: the model's, lowered (never raised) by the request's max_input_tokens."""
    limit = model_limit
    if request.max_input_tokens is not None:
        limit = max(1, min(limit, request.max_input_tokens))
    return limit


def _input_limit_note(request: ChatRequest, model_limit: int) -> tuple[str, ...]:
    """max_input_tokens can lower the model's prompt limit, not raise it: a higher value is read as the limit."""
    asked = request.max_input_tokens
    if asked is None or asked <= model_limit:
        return ()
    return (f"max_input_tokens={model_limit}: the model's prompt limit",)


def _constraint(request: ChatRequest, tools: tuple[ToolSpec, ...], partial: str | None) -> ConstraintSpec | None:
    schema = answer_schema(request.response_format)
    if schema is None and not tools:
        return None
    rf = request.response_format
    return ConstraintSpec(
        schema=schema,
        is_schema_given=rf is not None and rf.schema is not None and schema is not None,
        tools=tools,
        choice=request.tool_choice,
        is_parallel=request.parallel_tool_calls,
        prefix=partial,
    )


def _sampling(request: ChatRequest, model: ModelSpec, is_thinking: bool) -> tuple[SamplingParams, ...]:
    base = request.sampling.resolve(model.sampling_defaults(is_thinking))
    bias = dict(request.logit_bias)
    for token in model.end_tokens if request.ignore_eos else ():
        bias[token] = float("-inf")
    if any(not 0 <= t < model.n_vocab for t in bias):
        raise InvalidParameter(f"logit_bias token ids should be in [0, {model.n_vocab - 1}]")
    out = []
    for choice in range(request.n):
        seed = base.seed
        if seed is not None and choice > 0:
            seed = (seed + choice) % SEED_MODULUS  # n choices are independent samples (spec §4.5)
        out.append(
            SamplingParams(
                temperature=base.temperature,
                top_p=base.top_p,
                top_k=base.top_k,
                presence_penalty=base.presence_penalty,
                frequency_penalty=base.frequency_penalty,
                repetition_penalty=base.repetition_penalty,
                seed=seed,
                logit_bias=tuple(bias.items()),
            )
        )
    return tuple(out)
