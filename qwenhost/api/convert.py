"""Wire JSON -> core.ChatRequest: every request-level check whose answer needs no model (spec §1, §3.3).

Messages are DashScope's, verbatim where the spec records them. Checks that need the model
(context length, max_tokens bound, thinking support) live in service/.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from qwenhost.api.messages import parse_messages
from qwenhost.api.wire import INVALID_PARAMETERS, is_int, is_number, read_bool
from qwenhost.core.errors import (
    AlgoInvalidParameter,
    BadRequestBody,
    InvalidParameter,
    InvalidValue,
    MissingModel,
)
from qwenhost.core.types import (
    ChatRequest,
    NamedToolChoice,
    ResponseFormat,
    SamplingOverrides,
    SearchOptions,
    StopRule,
    ToolChoice,
    ToolSpec,
)

log = logging.getLogger("qwenhost.api")

SEED_MAX = 2**31 - 1
STOP_TYPE_MESSAGE = (
    'The "stop" parameter must be of type "str", "list[str]", "list[int]", or "list[list[int]]", '
    "and all elements within the list must be of the same type."
)
UNKNOWN_RESPONSE_FORMAT = (
    "Unknown format of response_format, response_format should be a dict, includes 'type' and an "
    "optional key 'json_schema'. The response_format type from user is {}."
)

# Fields this server reads; anything else is ignored with a debug log, as DashScope does.
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


def _float(
    body: Mapping[str, Any],
    key: str,
    lo: float,
    hi: float,
    message: str,
    *,
    hi_open: bool = False,
    lo_open: bool = False,
    algo: bool = False,
) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not is_number(value):
        raise InvalidParameter(f"'{key}' must be Float")
    too_low = value <= lo if lo_open else value < lo
    too_high = value >= hi if hi_open else value > hi
    if too_low or too_high:
        raise AlgoInvalidParameter(message) if algo else InvalidParameter(message)
    return float(value)


def _sampling(body: Mapping[str, Any]) -> SamplingOverrides:
    temperature = _float(body, "temperature", 0.0, 2.0, "Temperature should be in [0.0, 2.0)", hi_open=True, algo=True)
    top_p = _float(body, "top_p", 0.0, 1.0, "Range of top_p should be (0.0, 1.0]", lo_open=True)
    presence = _float(body, "presence_penalty", -2.0, 2.0, "Presence_penalty should be in [-2.0, 2.0]")
    frequency = _float(body, "frequency_penalty", -2.0, 2.0, "Frequency_penalty should be in [-2.0, 2.0]")
    repetition = body.get("repetition_penalty")
    if repetition is not None:
        if not is_number(repetition):
            raise InvalidParameter("'repetition_penalty' must be Float")
        if repetition <= 0:
            raise InvalidParameter("Repetition_penalty should be greater than 0.0")
    top_k_raw = body.get("top_k")
    top_k: int | None = None
    top_k_disabled = "top_k" in body and top_k_raw is None  # null disables top_k (spec §1.3 #9)
    if top_k_raw is not None:
        if not is_int(top_k_raw):
            raise InvalidParameter("'top_k' must be Integer")
        if top_k_raw < 0:
            raise InvalidParameter("Parameter top_k be greater than or equal to 0")
        top_k = int(top_k_raw)
        if top_k > 100 or top_k == 0:
            top_k_disabled = True
    seed = body.get("seed")
    if seed is not None:
        if not is_int(seed):
            raise InvalidValue("'seed' must be Integer")
        if seed < 0:
            raise InvalidValue(f"{int(seed)} is lesser than the minimum of 0 - 'seed'")
        if seed > SEED_MAX:
            raise InvalidValue(f"{int(seed)} is greater than the maximum of {SEED_MAX} - 'seed'")
        seed = int(seed)
    return SamplingOverrides(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        top_k_disabled=top_k_disabled,
        presence_penalty=presence,
        frequency_penalty=frequency,
        repetition_penalty=float(repetition) if repetition is not None else None,
        seed=seed,
    )


def _logit_bias(raw: Any) -> tuple[tuple[int, float], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise InvalidParameter("'logit_bias' must be an object mapping token ids to numbers")
    out = []
    for key, value in raw.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise InvalidParameter(f"logit_bias key {key!r} is not a token id") from None
        if not is_number(value) or not -100 <= value <= 100:
            raise InvalidParameter("logit_bias values should be in [-100, 100]")
        out.append((token, float(value)))
    return tuple(out)


def parse_stop(value: Any) -> StopRule:
    if value is None:
        return StopRule()
    if isinstance(value, str):
        return StopRule(strings=(value,) if value else ())
    if not isinstance(value, list):
        raise InvalidParameter(STOP_TYPE_MESSAGE)
    if not value:
        return StopRule()
    if all(isinstance(v, str) for v in value):
        return StopRule(strings=tuple(v for v in value if v))
    if all(is_int(v) and v >= 0 for v in value):
        return StopRule(token_sequences=tuple((int(v),) for v in value))
    if all(isinstance(v, list) and v and all(is_int(t) and t >= 0 for t in v) for v in value):
        return StopRule(token_sequences=tuple(tuple(int(t) for t in v) for v in value))
    raise InvalidParameter(STOP_TYPE_MESSAGE)


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidParameter(INVALID_PARAMETERS)
    tools = []
    for item in raw:
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or item.get("type", "function") != "function":
            raise InvalidParameter(INVALID_PARAMETERS)
        name = function.get("name")
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            raise InvalidParameter(INVALID_PARAMETERS)
        if name == "search":
            raise InvalidParameter("Tool names are not allowed to be [search]")
        parameters = function.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise InvalidParameter(INVALID_PARAMETERS)
        description = function.get("description")
        tools.append(
            ToolSpec(name=name, description=description if isinstance(description, str) else "", parameters=parameters)
        )
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    if raw is None:
        return "auto"
    if isinstance(raw, str):
        if raw in ("auto", "none", "required"):
            return raw  # type: ignore[return-value]
        raise InvalidParameter('tool_choice is one of the strings that should be ["none", "auto"]')
    if isinstance(raw, Mapping):
        function = raw.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if raw.get("type", "function") == "function" and isinstance(name, str):
            if not any(t.name == name for t in tools):
                raise InvalidParameter(f"tool_choice names the function '{name}', which is not in tools.")
            return NamedToolChoice(name)
    raise InvalidParameter('tool_choice is one of the strings that should be ["none", "auto"]')


def _response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, Mapping) else raw
    if not isinstance(raw, Mapping) or kind not in ("text", "json_object", "json_schema"):
        raise InvalidParameter(UNKNOWN_RESPONSE_FORMAT.format(kind))
    if kind != "json_schema":
        return ResponseFormat(type=kind)
    spec = raw.get("json_schema")
    if not isinstance(spec, Mapping):
        raise InvalidParameter(UNKNOWN_RESPONSE_FORMAT.format(kind))
    name = spec.get("name")
    if name is not None and (
        not isinstance(name, str) or len(name) > 64 or not all(c.isalnum() or c in "_-" for c in name)
    ):
        raise InvalidParameter("json_schema.name must be letters, digits, '_' or '-', at most 64 characters.")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        raise InvalidParameter("json_schema.schema must be a JSON Schema object.")
    strict = spec.get("strict", raw.get("strict", False))  # accepted inside or beside json_schema (spec §7.9)
    if not isinstance(strict, bool):
        raise InvalidParameter("'strict' must be Boolean")
    description = spec.get("description")
    return ResponseFormat(
        type="json_schema",
        schema=schema,
        name=name,
        strict=strict,
        description=description if isinstance(description, str) else None,
    )


def _optional_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not is_int(value):
        raise InvalidParameter(f"'{key}' must be Integer")
    return int(value)


def _search_options(raw: Any) -> SearchOptions | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidParameter("'search_options' must be an object")
    strategy = raw.get("search_strategy", "turbo")
    if strategy not in ("turbo", "max", "agent", "agent_max"):
        raise InvalidParameter("search_options.search_strategy must be one of turbo, max, agent, agent_max")
    return SearchOptions(
        forced_search=read_bool(raw, "forced_search"),
        search_strategy=strategy,
        enable_search_extension=read_bool(raw, "enable_search_extension"),
    )


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON body; raises ServeError with the spec's status, code and message."""
    if not isinstance(body, Mapping):
        raise BadRequestBody()
    unknown = set(body) - KNOWN_FIELDS
    if unknown:
        log.debug("ignoring unknown request fields: %s", sorted(unknown))  # DashScope ignores them too
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MissingModel()
    messages = parse_messages(body.get("messages"))
    stream = read_bool(body, "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, Mapping):
        raise InvalidParameter("'stream_options' must be an object")
    n, logprobs, top_logprobs = _choices(body)
    tools = _tools(body.get("tools"))
    if tools and n != 1:
        raise InvalidParameter("The n parameter must be 1 when tools are provided.")
    limits: dict[str, Any] = {
        k: _optional_int(body, k) for k in ("max_tokens", "max_completion_tokens", "thinking_budget")
    }
    thinking, outputs = _thinking(body), _outputs(body)  # checked in the order DashScope reports them
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=stream and bool(stream_options and stream_options.get("include_usage")),
        sampling=_sampling(body),
        max_input_tokens=_optional_int(body, "max_input_tokens"),
        n=n,
        stop=parse_stop(body.get("stop")),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=read_bool(body, "parallel_tool_calls"),
        tool_stream=read_bool(body, "tool_stream"),
        response_format=_response_format(body.get("response_format")),
        vl_high_resolution_images=read_bool(body, "vl_high_resolution_images"),
        enable_search=read_bool(body, "enable_search"),
        search_options=_search_options(body.get("search_options")),
        enable_code_interpreter=read_bool(body, "enable_code_interpreter"),
        logit_bias=_logit_bias(body.get("logit_bias")),
        ignore_eos=read_bool(body, "ignore_eos"),
        **limits,
        **thinking,
        **outputs,
    )


def _choices(body: Mapping[str, Any]) -> tuple[int, bool, int]:
    """``n``, ``logprobs`` and ``top_logprobs``."""
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not is_int(n) or not 1 <= n <= 4:
        raise InvalidParameter("Range of n should be [1, 4]")
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None and (not is_int(top_logprobs) or not 0 <= top_logprobs <= 5):
        raise InvalidParameter("Range of top_logprobs should be [0, 5]")
    return int(n), read_bool(body, "logprobs"), int(top_logprobs or 0)


def _thinking(body: Mapping[str, Any]) -> dict[str, Any]:
    """``enable_thinking``, ``preserve_thinking`` and ``reasoning_effort``: types only (the model decides)."""
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
    return out


def _outputs(body: Mapping[str, Any]) -> dict[str, Any]:
    """``modalities``, ``audio`` and ``translation_options``: shapes only (service/ refuses the features)."""
    modalities = body.get("modalities") or ["text"]
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
        raise InvalidParameter('\'modalities\' must be ["text"] or ["text", "audio"]')
    audio = body.get("audio")
    if audio is not None and not isinstance(audio, Mapping):
        raise InvalidParameter("'audio' must be an object with voice and format")
    translation = body.get("translation_options")
    if translation is not None and not isinstance(translation, Mapping):
        raise InvalidParameter("'translation_options' must be an object")
    return {"modalities": tuple(modalities), "audio_output": audio, "translation_options": translation}
