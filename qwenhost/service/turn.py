"""The assistant turn a prompt opens: the state of the thought at the end of the generation prompt, the
tail that makes it match the thinking mode whatever the template does, partial-mode prefixes (spec
§4.1), the template that can honour preserve_thinking, and the parser that reads the turn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from qwenhost.core.errors import NotSupported
from qwenhost.core.types import Message, ToolSpec
from qwenhost.formats.base import ModelFormat
from qwenhost.parsing.base import OutputParser
from qwenhost.parsing.reasoning import ReasoningParser
from qwenhost.service.models import ServedModel
from qwenhost.service.prompt import render
from qwenhost.service.thinking import ThinkingPlan
from qwenhost.templates.renderer import ChatTemplate

# Where the generation prompt leaves the thought: "open" (the model may start one), "inside" (the prompt
# ends with `<think>\n`, spec §6.3) or "closed" (it ends after `</think>`: the model answers).
ThoughtState = Literal["open", "inside", "closed"]
PRESERVE_VARIABLE = "preserve_thinking"


@dataclass(frozen=True, slots=True)
class Turn:
    text: str  # the whole prompt text: the template's, the thinking tail, a partial-mode prefix
    thought: ThoughtState
    marks: tuple[int, ...] = ()  # offsets in ``text`` where the cache markers stood (service/prompt.py)


def thought_state(text: str, fmt: ModelFormat) -> ThoughtState:
    if not fmt.has_thinking:
        return "closed"
    end = text.rstrip()
    if end.endswith(fmt.think_open):
        return "inside"
    if end.endswith(fmt.think_close):
        return "closed"
    return "open"


def generation_tail(text: str, fmt: ModelFormat, is_thinking: bool) -> str:
    """Text to append to the rendered template so the prompt is in the thinking mode asked for.

    Templates that already do it (Qwen3's, Qwen3.5's, QwQ's) get nothing; a template that ignores
    ``enable_thinking`` or lacks the thinking-only prefill gets the family's own form (spec §6.2-6.4)."""
    state = thought_state(text, fmt)
    if is_thinking:
        return f"{fmt.think_open}\n" if state == "open" and fmt.think_prefill else ""
    if state == "open":
        return f"{fmt.think_open}\n\n{fmt.think_close}\n\n"
    if state == "inside":
        return ("" if text.endswith("\n") else "\n") + f"\n{fmt.think_close}\n\n"
    return ""


def template_for(model: ServedModel, plan: ThinkingPlan, tools: Sequence[ToolSpec]) -> ChatTemplate:
    """The template to render with. preserve_thinking needs one that knows the variable; the built-in
    Qwen3 one stands in for a JSON-tool family's template that does not (spec §6.4)."""
    template = model.tool_template if tools else model.template
    if not plan.preserve or PRESERVE_VARIABLE in template.source:
        return template
    fallback = model.preserve_template
    if fallback is None:
        raise NotSupported("preserve_thinking is not supported by this model's chat template.")
    return fallback


def build_turn(
    model: ServedModel,
    messages: Sequence[Message],
    plan: ThinkingPlan,
    *,
    tools: Sequence[ToolSpec] = (),
    prefix: str | None = None,
) -> Turn:
    """The prompt text for ``messages``, rendered once: the tail that puts it in the thinking mode asked
    for, then ``prefix`` (a partial-mode assistant message, left open and continued)."""
    rendered = render(template_for(model, plan, tools), messages, tools=tools, template_kwargs=plan.template_kwargs)
    fmt = model.format
    tail = generation_tail(rendered.text, fmt, plan.is_thinking) if fmt.has_thinking else ""
    head = rendered.text + tail
    return Turn(text=head + (prefix or ""), thought=thought_state(head, fmt), marks=rendered.marks)


def turn_parser(inner: OutputParser, fmt: ModelFormat, thought: ThoughtState, choice: int) -> OutputParser:
    """The reasoning splitter around ``inner`` when the output may hold a thought; ``inner`` otherwise."""
    if thought == "closed":
        return inner
    return ReasoningParser(
        choice, inner, starts_inside=thought == "inside", open_tag=fmt.think_open, close_tag=fmt.think_close
    )
