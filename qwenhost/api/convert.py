"""Wire JSON -> core.ChatRequest: every request-level check whose answer needs no model (spec §1, §3.3).

Messages are DashScope's, verbatim where the spec records them. Checks that need the model
(context length, max_tokens bound, thinking support) live in service/.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, cast

from qwenhost.core.errors import (
    AlgoInvalidParameter,
    InvalidParameter,
    InvalidValue,
    MissingModel,
)
from qwenhost.core.types import (
    ChatRequest,
    ContentPart,
    MediaPart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    Role,
    SamplingOverrides,
    SearchOptions,
    StopRule,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

log = logging.getLogger("qwenhost.api")

ROLES = ("system", "assistant", "user", "tool", "function")
SEED_MAX = 2**31 - 1
STOP_TYPE_MESSAGE = (
    'The "stop" parameter must be of type "str", "list[str]", "list[int]", or "list[list[int]]", '
    "and all elements within the list must be of the same type."
)
UNKNOWN_RESPONSE_FORMAT = (
    "Unknown format of response_format, response_format should be a dict, includes 'type' and an "
    "optional key 'json_schema'. The response_format type from user is {}."
)
BAD_CONTENT_ITEM = "The provided messages input is invalid. The error info is [Unexpected item type in content]"
INVALID_PARAMETERS = "Required parameter(s) missing or invalid, please check the request parameters."

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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _bool(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParameter(f"'{key}' must be Boolean")
    return value


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
    if not _is_number(value):
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
        if not _is_number(repetition):
            raise InvalidParameter("'repetition_penalty' must be Float")
        if repetition <= 0:
            raise InvalidParameter("Repetition_penalty should be greater than 0.0")
    top_k_raw = body.get("top_k")
    top_k: int | None = None
    top_k_disabled = "top_k" in body and top_k_raw is None  # null disables top_k (spec §1.3 #9)
    if top_k_raw is not None:
        if not _is_int(top_k_raw):
            raise InvalidParameter("'top_k' must be Integer")
        if top_k_raw < 0:
            raise InvalidParameter("Parameter top_k be greater than or equal to 0")
        top_k = int(top_k_raw)
        if top_k > 100 or top_k == 0:
            top_k_disabled = True
    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed):
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
        if not _is_number(value) or not -100 <= value <= 100:
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
    if all(_is_int(v) and v >= 0 for v in value):
        return StopRule(token_sequences=tuple((int(v),) for v in value))
    if all(isinstance(v, list) and v and all(_is_int(t) and t >= 0 for t in v) for v in value):
        return StopRule(token_sequences=tuple(tuple(int(t) for t in v) for v in value))
    raise InvalidParameter(STOP_TYPE_MESSAGE)


def _media_url(part: Mapping[str, Any], key: str) -> str:
    raw = part.get(key)
    url = raw.get("url") if isinstance(raw, Mapping) else raw
    if not isinstance(url, str) or not url:
        raise InvalidParameter(BAD_CONTENT_ITEM)
    return url


def _pixel_controls(part: Mapping[str, Any]) -> dict[str, Any]:
    controls: dict[str, Any] = {}
    for key in ("min_pixels", "max_pixels", "total_pixels"):
        value = part.get(key)
        if value is not None:
            if not _is_int(value) or value <= 0:
                raise InvalidParameter(f"'{key}' must be a positive Integer")
            controls[key] = int(value)
    fps = part.get("fps")
    if fps is not None:
        if not _is_number(fps):
            raise InvalidParameter("'fps' must be Float")
        controls["fps"] = float(fps)
    return controls


def _content_part(part: Any) -> ContentPart:
    if not isinstance(part, Mapping):
        raise InvalidParameter(BAD_CONTENT_ITEM)
    kind = part.get("type")
    cache = part.get("cache_control")
    if cache is not None and (not isinstance(cache, Mapping) or cache.get("type") != "ephemeral"):
        raise InvalidParameter("cache_control only supports type 'ephemeral'.")
    has_cache = cache is not None
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidParameter(BAD_CONTENT_ITEM)
        return TextPart(text=text, cache_control=has_cache)
    if kind == "image_url":
        return MediaPart("image", (_media_url(part, "image_url"),), cache_control=has_cache, **_pixel_controls(part))
    if kind == "video_url":
        return MediaPart("video", (_media_url(part, "video_url"),), cache_control=has_cache, **_pixel_controls(part))
    if kind == "video":
        frames = part.get("video")
        if not isinstance(frames, list) or not all(isinstance(f, str) and f for f in frames):
            raise InvalidParameter(BAD_CONTENT_ITEM)
        return MediaPart("video_frames", tuple(frames), cache_control=has_cache, **_pixel_controls(part))
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, Mapping) or not isinstance(audio.get("data"), str):
            raise InvalidParameter(BAD_CONTENT_ITEM)
        fmt = audio.get("format")
        return MediaPart(
            "audio", (audio["data"],), audio_format=fmt if isinstance(fmt, str) else None, cache_control=has_cache
        )
    raise InvalidParameter(BAD_CONTENT_ITEM)


def _content(raw: Any, role: str) -> str | tuple[ContentPart, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        parts = tuple(_content_part(p) for p in raw)
        if role in ("system", "assistant", "tool") and any(isinstance(p, MediaPart) for p in parts):
            raise InvalidParameter(BAD_CONTENT_ITEM)
        return parts
    raise InvalidParameter("Input should be a valid string")


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidParameter(INVALID_PARAMETERS)
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidParameter(INVALID_PARAMETERS)
        arguments = function.get("arguments", "")
        if isinstance(arguments, Mapping):
            import json

            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(arguments, str):
            raise InvalidParameter(INVALID_PARAMETERS)
        call_id = item.get("id")
        calls.append(
            ToolCall(id=call_id if isinstance(call_id, str) else "", name=function["name"], arguments=arguments)
        )
    return tuple(calls)


def _message(raw: Any, index: int) -> Message:
    if not isinstance(raw, Mapping):
        raise InvalidParameter("Input should be a valid dictionary or instance of GPT3Message")
    role = raw.get("role")
    if role not in ROLES:
        raise InvalidParameter(f"{role} is not one of {list(ROLES)} - 'messages.[{index}].role'")
    if role == "function":
        role = "tool"
    content = _content(raw.get("content"), role)
    tool_calls = _tool_calls(raw.get("tool_calls")) if role == "assistant" else ()
    if content is None and not (role == "assistant" and (tool_calls or raw.get("reasoning_content"))):
        raise InvalidParameter("The content field is a required field.")
    reasoning = raw.get("reasoning_content")
    partial = raw.get("partial", False)
    if not isinstance(partial, bool):
        raise InvalidParameter("'partial' must be Boolean")
    tool_call_id = raw.get("tool_call_id")
    name = raw.get("name")
    return Message(
        role=cast(Role, role),
        content=content,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id if isinstance(tool_call_id, str) else None,
        reasoning_content=reasoning if isinstance(reasoning, str) else None,
        partial=partial and role == "assistant",
        name=name if isinstance(name, str) else None,
    )


def _check_conversation(messages: tuple[Message, ...]) -> None:
    if len(messages) == 1 and messages[0].role == "system":
        raise AlgoInvalidParameter(
            'The messages list should not contain only one message with role "system". '
            "Please include at least one other role in the messages."
        )
    if not any(m.role == "user" for m in messages):
        raise InvalidParameter("The input messages do not contain elements with the role of user.")
    pending: list[str] = []
    pending_index = -1
    for i, m in enumerate(messages):
        if m.role == "tool":
            if pending_index < 0:
                raise InvalidParameter(
                    'messages with role "tool" must be a response to a preceding message with "tool_calls"'
                )
            if m.tool_call_id in pending:
                pending.remove(m.tool_call_id)
            elif pending:
                pending.pop(0)  # clients that omit tool_call_id answer the calls in order
            continue
        if pending:
            raise InvalidParameter(
                'An assistant message with "tool_calls" must be followed by tool messages responding to each '
                f'"tool_call_id". The following tool_call_ids did not have response messages: message[{i}].role'
            )
        pending_index = -1
        if m.role == "assistant" and m.tool_calls:
            pending = [c.id for c in m.tool_calls]
            pending_index = i
    if pending and messages[-1].role == "assistant":
        raise InvalidParameter(
            'An assistant message with "tool_calls" must be followed by tool messages responding to each '
            f'"tool_call_id". The following tool_call_ids did not have response messages: '
            f"message[{len(messages)}].role"
        )


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
    if not _is_int(value):
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
        forced_search=_bool(raw, "forced_search"),
        search_strategy=strategy,
        enable_search_extension=_bool(raw, "enable_search_extension"),
    )


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON body; raises ServeError with the spec's status, code and message."""
    if not isinstance(body, Mapping):
        from qwenhost.core.errors import BadRequestBody

        raise BadRequestBody()
    unknown = set(body) - KNOWN_FIELDS
    if unknown:
        log.debug("ignoring unknown request fields: %s", sorted(unknown))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MissingModel()
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise InvalidParameter('Either "prompt" or "messages" must exist and cannot both be none')
    if not isinstance(raw_messages, list):
        raise InvalidParameter("Input should be a valid list")
    if not raw_messages:
        raise InvalidParameter("[] is too short")
    messages = tuple(_message(m, i) for i, m in enumerate(raw_messages))
    _check_conversation(messages)

    stream = _bool(body, "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, Mapping):
        raise InvalidParameter("'stream_options' must be an object")
    include_usage = stream and bool(stream_options and stream_options.get("include_usage"))

    n = body.get("n", 1)
    if n is None:
        n = 1
    if not _is_int(n) or not 1 <= n <= 4:
        raise InvalidParameter("Range of n should be [1, 4]")
    logprobs = _bool(body, "logprobs")
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None and (not _is_int(top_logprobs) or not 0 <= top_logprobs <= 5):
        raise InvalidParameter("Range of top_logprobs should be [0, 5]")
    tools = _tools(body.get("tools"))
    if tools and n != 1:
        raise InvalidParameter("The n parameter must be 1 when tools are provided.")
    max_tokens = _optional_int(body, "max_tokens")
    max_completion_tokens = _optional_int(body, "max_completion_tokens")
    thinking_budget = _optional_int(body, "thinking_budget")
    enable_thinking = body.get("enable_thinking")
    if enable_thinking is not None and not isinstance(enable_thinking, bool):
        raise InvalidParameter("'enable_thinking' must be Boolean")
    preserve_thinking = body.get("preserve_thinking")
    if preserve_thinking is not None and not isinstance(preserve_thinking, bool):
        raise InvalidParameter("'preserve_thinking' must be Boolean")
    reasoning_effort = body.get("reasoning_effort")
    if reasoning_effort is not None and not isinstance(reasoning_effort, str):
        raise InvalidParameter("'reasoning_effort' must be String")
    modalities = body.get("modalities") or ["text"]
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
        raise InvalidParameter('\'modalities\' must be ["text"] or ["text", "audio"]')
    audio = body.get("audio")
    if audio is not None and not isinstance(audio, Mapping):
        raise InvalidParameter("'audio' must be an object with voice and format")
    translation = body.get("translation_options")
    if translation is not None and not isinstance(translation, Mapping):
        raise InvalidParameter("'translation_options' must be an object")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        sampling=_sampling(body),
        max_tokens=max_tokens,
        max_completion_tokens=max_completion_tokens,
        max_input_tokens=_optional_int(body, "max_input_tokens"),
        n=int(n),
        stop=parse_stop(body.get("stop")),
        logprobs=logprobs,
        top_logprobs=int(top_logprobs or 0),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=_bool(body, "parallel_tool_calls"),
        tool_stream=_bool(body, "tool_stream"),
        response_format=_response_format(body.get("response_format")),
        enable_thinking=enable_thinking,
        thinking_budget=thinking_budget,
        preserve_thinking=preserve_thinking,
        reasoning_effort=reasoning_effort,
        vl_high_resolution_images=_bool(body, "vl_high_resolution_images"),
        modalities=tuple(modalities),
        audio_output=audio,
        enable_search=_bool(body, "enable_search"),
        search_options=_search_options(body.get("search_options")),
        enable_code_interpreter=_bool(body, "enable_code_interpreter"),
        translation_options=translation,
        logit_bias=_logit_bias(body.get("logit_bias")),
        ignore_eos=_bool(body, "ignore_eos"),
    )
