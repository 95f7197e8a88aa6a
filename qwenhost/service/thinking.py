"""Thinking for one request (spec §4.4, §3.3): on or off (enable_thinking, reasoning_effort, the /think and
/no_think soft switches), thinking_budget, preserve_thinking, and the incompatibility errors — decided
from the request and the model's spec alone (service/plan.py), before the first byte."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from qwenhost.core.errors import InvalidParameter, NotSupportEnableThinking
from qwenhost.core.types import ChatRequest, Message, NamedToolChoice
from qwenhost.service.models import ModelSpec

# Spec §4.4 (qwen3.8 vocabulary): effort -> thought budget; None: no limit but the context.
EFFORT_BUDGETS: dict[str, int | None] = {
    "minimal": 4096,
    "low": 4096,
    "medium": 16384,
    "high": None,
    "xhigh": None,
    "max": None,
}
EFFORT_OFF = "none"  # reasoning_effort "none" is enable_thinking:false
BAD_EFFORT = "Unexpected reasoning effort {}. Supported types are xhigh (default), medium, and low."

ONLY_THINKING = "The value of the enable_thinking parameter is restricted to True."
BAD_BUDGET = "The thinking_budget parameter must be a positive integer and not greater than {}"
BUDGET_AND_EFFORT = "reasoning_effort and thinking_budget cannot be set at the same time."
JSON_MODE = "Json mode response is not supported when enable_thinking is true"
PARTIAL_MODE = "Partial mode is not supported when enable_thinking is true"
FORCED_TOOL = "The tool_choice parameter does not support being set to required or object in thinking mode"
# Spec §7.3: DashScope's text for n > 1 in thinking mode was never captured; this follows its wording.
MANY_CHOICES = "The n parameter must be 1 when enable_thinking is true."

# Qwen3's soft switch: "/think" or "/no_think" written as a word in user or system text; the latest wins.
SOFT_SWITCH = re.compile(r"(?<![\w/])/(think|no_think)(?![\w/])")


@dataclass(frozen=True, slots=True)
class ThinkingPlan:
    is_thinking: bool
    budget: int | None = None  # thought tokens before the close tag is forced; None: no limit
    preserve: bool = False
    template_kwargs: Mapping[str, object] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # parameters that have no effect on this model (reported, never silent)


def soft_switch(messages: tuple[Message, ...]) -> bool | None:
    """The most recent /think (True) or /no_think (False) in user or system messages, if any."""
    for message in reversed(messages):
        if message.role not in ("user", "system"):
            continue
        found: list[str] = SOFT_SWITCH.findall(message.text())
        if found:
            return found[-1] == "think"
    return None


def plan_thinking(request: ChatRequest, model: ModelSpec) -> ThinkingPlan:
    fmt = model.format
    requested = _requested(request)
    if not fmt.has_thinking:
        if requested:
            raise NotSupportEnableThinking(request.model)
        _budget(request, model)  # still checked: a bad value is refused on every model
        effort = request.reasoning_effort if request.reasoning_effort != EFFORT_OFF else None
        unused = ("thinking_budget", request.thinking_budget), ("reasoning_effort", effort)
        notes = tuple(f"{key}: the model does not think" for key, value in unused if value is not None)
        return ThinkingPlan(is_thinking=False, preserve=bool(request.preserve_thinking), notes=notes)
    if fmt.thinking == "always":
        if requested is False:
            raise InvalidParameter(ONLY_THINKING)
        is_thinking = True
    else:
        is_thinking = _hybrid_choice(request, model, requested)
    budget = _budget(request, model)
    if is_thinking:
        _check_compatible(request, model)
    preserve = bool(request.preserve_thinking)
    kwargs: dict[str, object] = {}
    if fmt.thinking_kwarg:
        kwargs[fmt.thinking_kwarg] = is_thinking
    if preserve:
        kwargs["preserve_thinking"] = True
    return ThinkingPlan(is_thinking=is_thinking, budget=budget, preserve=preserve, template_kwargs=kwargs)


def _requested(request: ChatRequest) -> bool | None:
    """What the request asked for: enable_thinking, else reasoning_effort "none", else nothing."""
    effort = request.reasoning_effort
    if effort is not None and effort != EFFORT_OFF and effort not in EFFORT_BUDGETS:
        raise InvalidParameter(BAD_EFFORT.format(effort))
    if request.enable_thinking is not None:
        return request.enable_thinking
    return False if effort == EFFORT_OFF else None


def _hybrid_choice(request: ChatRequest, model: ModelSpec, requested: bool | None) -> bool:
    # An explicit enable_thinking:false is final (the template closes the thought); otherwise the
    # latest soft switch wins over the request and the default, as the Qwen3 model card describes.
    if requested is False:
        return False
    switch = soft_switch(request.messages) if model.format.soft_switch else None
    if switch is not None:
        return switch
    return True if requested else model.thinking_default


def _budget(request: ChatRequest, model: ModelSpec) -> int | None:
    limit = model.max_output_tokens
    effort = request.reasoning_effort
    if request.thinking_budget is not None:
        if not 1 <= request.thinking_budget <= limit:
            raise InvalidParameter(BAD_BUDGET.format(limit))
        if effort is not None and effort != EFFORT_OFF:
            raise InvalidParameter(BUDGET_AND_EFFORT)
        return request.thinking_budget
    return EFFORT_BUDGETS.get(effort) if effort is not None else None


def _check_compatible(request: ChatRequest, model: ModelSpec) -> None:
    """The features DashScope refuses in thinking mode (spec §4.4), with its messages."""
    if request.response_format is not None and request.response_format.type != "text":
        raise InvalidParameter(JSON_MODE)
    if request.is_partial:
        raise InvalidParameter(PARTIAL_MODE)
    if request.tool_choice == "required" or isinstance(request.tool_choice, NamedToolChoice):
        raise InvalidParameter(FORCED_TOOL)
    if request.n > 1:
        raise InvalidParameter(MANY_CHOICES)
    if model.is_stream_only_thinking and not request.stream:
        raise InvalidParameter(model.format.stream_only_message)
