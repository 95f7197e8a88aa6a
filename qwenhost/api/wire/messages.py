"""Wire ``messages`` -> core Messages: roles, content parts (text and media), tool calls, and the
conversation rules that need no model (spec §1.3 #2, §3.3). Messages are DashScope's, verbatim."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from qwenhost.api.wire.values import BAD_CONTENT_ITEM, INVALID_PARAMETERS, is_int, is_number
from qwenhost.core.errors import AlgoInvalidParameter, InvalidParameter
from qwenhost.core.types import ContentPart, MediaPart, Message, Role, TextPart, ToolCall
from qwenhost.media.resize import FPS_RANGE

ROLES = ("system", "assistant", "user", "tool", "function")


def parse_messages(raw: Any) -> tuple[Message, ...]:
    """The ``messages`` field, checked whole: shape, each message, then the conversation's order."""
    if raw is None:
        raise InvalidParameter('Either "prompt" or "messages" must exist and cannot both be none')
    if not isinstance(raw, list):
        raise InvalidParameter("Input should be a valid list")
    if not raw:
        raise InvalidParameter("[] is too short")
    messages = tuple(_message(m, i) for i, m in enumerate(raw))
    _check_conversation(messages)
    return messages


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
            if not is_int(value) or value <= 0:
                raise InvalidParameter(f"'{key}' must be a positive Integer")
            controls[key] = int(value)
    fps = part.get("fps")
    if fps is not None:
        if not is_number(fps):
            raise InvalidParameter("'fps' must be Float")
        if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:  # the documented range (spec §4.11): refused, not clamped
            raise InvalidParameter(f"fps should be in [{FPS_RANGE[0]}, {FPS_RANGE[1]}]")
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
