"""Native ``{model, input, parameters}`` -> core ChatRequest, through compatible mode's own validation.

The native body is rewritten into compatible mode's field names (messages, native content parts, the
``parameters`` keys, which are the same names) and handed to api/wire/request.py, so both dialects check a
request with the same code and the same messages; only the response options stay here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request

from qwenhost.api.dialect import read_headers
from qwenhost.api.wire.request import read_chat
from qwenhost.api.wire.values import read_bool
from qwenhost.core.errors import InvalidParameter, ServeError
from qwenhost.core.types import ChatRequest

RESULT_FORMATS = ("text", "message")
# Response options of the native route: not fields of the domain request.
_ROUTE_KEYS = frozenset({"result_format", "incremental_output", "stream", "stream_options", "model", "messages"})


@dataclass(frozen=True, slots=True)
class NativeOptions:
    """How to render the answer: ``result_format`` None means "the model's default" (decided at render)."""

    incremental: bool | None  # None: the requested name's default (aliases.py), else cumulative
    result_format: str | None
    multimodal: bool
    ignored: tuple[str, ...] = ()  # parameters and headers with no effect here (x-qwenhost-ignored)


def wants_stream(request: Request) -> bool:
    """``X-DashScope-SSE: enable`` (every SDK), or ``Accept: text/event-stream`` alone (curl users, spec §7.3)."""
    if request.headers.get("x-dashscope-sse", "").lower() == "enable":
        return True
    return request.headers.get("accept", "").split(";")[0].strip().lower() == "text/event-stream"


def _part(raw: Any) -> Any:
    """A native part (``{"text"|"image"|"video"|"audio": …}``, no ``type``) -> compatible mode's."""
    if not isinstance(raw, Mapping) or "type" in raw:
        return raw
    hints = {k: v for k, v in raw.items() if k not in ("text", "image", "video", "audio")}
    if "text" in raw:
        return {"type": "text", "text": raw["text"], **hints}
    if "image" in raw:
        return {"type": "image_url", "image_url": {"url": raw["image"]}, **hints}
    if "video" in raw:
        video = raw["video"]
        if isinstance(video, list):
            return {"type": "video", "video": video, **hints}
        return {"type": "video_url", "video_url": {"url": video}, **hints}
    if "audio" in raw:
        return {"type": "input_audio", "input_audio": {"data": raw["audio"]}, **hints}
    return raw


def _message(raw: Any) -> Any:
    if isinstance(raw, Mapping) and isinstance(raw.get("content"), list):
        return {**raw, "content": [_part(p) for p in raw["content"]]}
    return raw


def _messages(inp: Mapping[str, Any]) -> Any:
    """``input.messages``, else ``history`` pairs and ``prompt`` as user/assistant turns (spec §2.2)."""
    messages = inp.get("messages")
    prompt = inp.get("prompt")
    if messages is None and prompt is None:
        return None  # convert.py answers with DashScope's message
    out: list[Any] = []
    if isinstance(messages, list):
        out = [_message(m) for m in messages]
    elif messages is not None:
        return messages  # not a list: convert.py refuses it
    for turn in inp.get("history") or []:
        if isinstance(turn, Mapping):
            out += [{"role": "user", "content": turn.get("user")}, {"role": "assistant", "content": turn.get("bot")}]
    if prompt is not None:
        out.append({"role": "user", "content": prompt})
    return out


def _options(params: Mapping[str, Any], multimodal: bool) -> NativeOptions:
    fmt = params.get("result_format")
    if fmt is not None and fmt not in RESULT_FORMATS:
        raise InvalidParameter("result_format must be 'text' or 'message'")
    incremental = params.get("incremental_output")
    if incremental is not None:
        incremental = read_bool(params, "incremental_output")
    if multimodal:
        fmt = "message"  # the multimodal endpoint always answers in message format (spec §7.5)
    return NativeOptions(incremental=incremental, result_format=fmt, multimodal=multimodal)


def parse_native(body: Any, request: Request, *, multimodal: bool) -> tuple[ChatRequest, NativeOptions]:
    """Validate a decoded native body; raises ServeError (rendered in native codes by the dialect)."""
    headers = read_headers(request)
    if not isinstance(body, Mapping):
        raise ServeError("Required body invalid, please check the request body format.", code="InvalidParameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ServeError('Required parameter "model" missing from request.', code="BadRequest.EmptyModel")
    inp = body.get("input")
    if not isinstance(inp, Mapping):
        raise ServeError("Required input parameter missing from request.", code="BadRequest.EmptyInput")
    params = body.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise InvalidParameter("'parameters' must be an object")
    stream = wants_stream(request)
    compat: dict[str, Any] = {k: v for k, v in params.items() if k not in _ROUTE_KEYS}
    compat.update(model=model, messages=_messages(inp), stream=stream)
    wire = read_chat(compat)
    options = _options(params, multimodal)
    chat = replace(wire.request, resolve_oss=headers.resolve_oss)
    return chat, replace(options, ignored=wire.ignored + headers.inert)
