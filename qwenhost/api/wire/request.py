"""A request body in compatible mode's field names -> core.ChatRequest, plus what the route renders with.

Every request-level check whose answer needs no model (spec §1, §3.3), with DashScope's messages. The
native dialect renames its fields onto these names first (api/native/request.py), so both dialects are
checked by this one module. Checks that need the model (context length, max_tokens bound, thinking
support) live in service/plan.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qwenhost.api.wire.messages import parse_messages
from qwenhost.api.wire.outputs import read_outputs
from qwenhost.api.wire.sampling import parse_stop, read_choices, read_limits, read_logit_bias, read_sampling
from qwenhost.api.wire.tools import read_response_format, read_search_options, read_tool_choice, read_tools
from qwenhost.api.wire.values import read_bool
from qwenhost.core.errors import BadRequestBody, InvalidParameter, MissingModel, NotSupported
from qwenhost.core.types import ChatRequest

log = logging.getLogger("qwenhost.api")

# Fields this module reads. Anything else is ignored, as DashScope ignores it, and named back to the
# client in the x-qwenhost-ignored response header (api/notes.py) so that nothing is ignored unseen.
KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "modalities",
        "audio",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "max_input_tokens",
        "max_tokens",
        "max_completion_tokens",
        "vl_high_resolution_images",
        "n",
        "enable_thinking",
        "thinking",
        "preserve_thinking",
        "thinking_budget",
        "reasoning_effort",
        "tool_stream",
        "enable_code_interpreter",
        "seed",
        "logprobs",
        "top_logprobs",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "enable_search",
        "search_options",
        "skill",
        "clear_thinking",
        "translation_options",
        "logit_bias",
        "ignore_eos",
    }
)
# Model-specific extensions of DashScope's reference for model families qwenhost does not serve (spec
# §1.3 #35, #36): refused when set, with the catalogue's "This model does not support X." wording.
OTHER_MODELS_ONLY = ("skill", "clear_thinking")
THINKING_TYPES = {"adaptive": None, "disabled": False}  # MiniMax's ``thinking`` (spec §1.3 #19)


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A checked body: the domain request, and what only the HTTP edge uses."""

    request: ChatRequest
    include_usage: bool  # stream_options.include_usage on a streaming request: a final usage chunk
    ignored: tuple[str, ...]  # fields read and ignored (unknown names, stream_options keys we do not know)


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON body; raises ServeError with the spec's status, code and message."""
    return read_chat(body).request


def read_chat(body: Any) -> WireRequest:
    if not isinstance(body, Mapping):
        raise BadRequestBody()
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MissingModel()
    messages = parse_messages(body.get("messages"))
    stream = read_bool(body, "stream")
    include_usage, stream_ignored = _stream_options(body.get("stream_options"))
    n, logprobs, top_logprobs = read_choices(body)
    tools = read_tools(body.get("tools"))
    if tools and n != 1:
        raise InvalidParameter("The n parameter must be 1 when tools are provided.")
    limits = read_limits(body)
    thinking = _thinking(body)  # checked in the order DashScope reports them
    outputs = read_outputs(body, messages, stream=stream, n=n)
    for key in OTHER_MODELS_ONLY:
        if body.get(key) is not None:
            raise NotSupported(f"This model does not support {key}.")
    request = ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        sampling=read_sampling(body),
        n=n,
        stop=parse_stop(body.get("stop")),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        tools=tools,
        tool_choice=read_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=read_bool(body, "parallel_tool_calls"),
        tool_stream=read_bool(body, "tool_stream"),
        response_format=read_response_format(body.get("response_format")),
        vl_high_resolution_images=read_bool(body, "vl_high_resolution_images"),
        enable_search=read_bool(body, "enable_search"),
        search_options=read_search_options(body.get("search_options")),
        enable_code_interpreter=read_bool(body, "enable_code_interpreter"),
        logit_bias=read_logit_bias(body.get("logit_bias")),
        ignore_eos=read_bool(body, "ignore_eos"),
        **limits,
        **thinking,
        **outputs,
    )
    unknown = tuple(sorted(str(k) for k in body if k not in KNOWN_FIELDS))
    if unknown:
        log.debug("ignoring unknown request fields: %s", unknown)
    return WireRequest(request, include_usage=stream and include_usage, ignored=unknown + stream_ignored)


def _stream_options(raw: Any) -> tuple[bool, tuple[str, ...]]:
    """``include_usage`` (a boolean: the string "false" is refused, not read as true), and the other keys."""
    if raw is None:
        return False, ()
    if not isinstance(raw, Mapping):
        raise InvalidParameter("'stream_options' must be an object")
    include_usage = read_bool(raw, "include_usage")
    return include_usage, tuple(sorted(f"stream_options.{k}" for k in raw if k != "include_usage"))


def _thinking(body: Mapping[str, Any]) -> dict[str, Any]:
    """``enable_thinking``, ``preserve_thinking``, ``reasoning_effort`` and ``thinking``: types only (the
    model decides in service/thinking.py)."""
    out: dict[str, Any] = {}
    for key, kind, name in (
        ("enable_thinking", bool, "Boolean"),
        ("preserve_thinking", bool, "Boolean"),
        ("reasoning_effort", str, "String"),
    ):
        value = body.get(key)
        if value is not None and not isinstance(value, kind):
            raise InvalidParameter(f"'{key}' must be {name}")
        out[key] = value
    thinking = body.get("thinking")
    if thinking is not None:
        mode = thinking.get("type") if isinstance(thinking, Mapping) else None
        if not isinstance(mode, str) or mode not in THINKING_TYPES:
            raise InvalidParameter('\'thinking\' must be an object whose type is "adaptive" or "disabled"')
        said = THINKING_TYPES[mode]  # adaptive: the model's own default; disabled: enable_thinking false
        if said is not None and out["enable_thinking"] not in (None, said):
            raise InvalidParameter("thinking and enable_thinking disagree: set only one of them.")
        if said is not None:
            out["enable_thinking"] = said
    return out
