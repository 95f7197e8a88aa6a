"""ChatEvents -> native DashScope JSON: ``output`` in text or message format, native ``usage``, and the
``id:``/``event:result``/``:HTTP_STATUS/200``/``data:`` framing with cumulative usage in every event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qwenhost.api.errors import dumps
from qwenhost.api.native.errors import native_error_body
from qwenhost.api.native.request import NativeOptions
from qwenhost.api.render import audio_json
from qwenhost.core.errors import ServeError
from qwenhost.core.events import (
    AudioDelta,
    ChatEvent,
    ContentDelta,
    Finish,
    FoldedAnswer,
    KeepAlive,
    ReasoningDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    ToolReport,
    UsageReport,
)
from qwenhost.core.types import Usage
from qwenhost.service.job import Job

Delta = ContentDelta | ReasoningDelta | ToolCallStart | ToolCallArgsDelta
STREAMING = "null"  # the string DashScope sends as finish_reason until the last event


def native_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache.cached_tokens},
    }
    if usage.reasoning_tokens is not None:
        out["output_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.output_audio_tokens is not None:  # a spoken answer (docs/speech-and-translation.md)
        spent = (usage.reasoning_tokens or 0) + usage.output_audio_tokens
        out["output_tokens_details"] = {
            **out.get("output_tokens_details", {}),
            "audio_tokens": usage.output_audio_tokens,
            "text_tokens": usage.completion_tokens - spent,
        }
    details = {k: getattr(usage, k) for k in ("text_tokens", "image_tokens", "video_tokens", "audio_tokens")}
    details = {k: v for k, v in details.items() if v is not None}
    if details:
        out["input_tokens_details"] = details
        out.update({k: v for k, v in details.items() if k != "text_tokens"})
    return out


def tool_fields(job: Job, reports: Sequence[ToolReport]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the server tools add to ``output`` (``search_info``, ``tool_info``) and ``usage.plugins``: the
    code the interpreter ran, never its output (spec §4.9, native)."""
    output: dict[str, Any] = {}
    plugins: dict[str, Any] = {}
    info, searched = search_sources(job, reports)
    if info is not None and searched is not None:
        output["search_info"], plugins = info, searched
    codes = [r for r in reports if r.name == "code_interpreter"]
    if codes:
        output["tool_info"] = [
            {"type": "code_interpreter", "code_interpreter": {"code": r.info.get("code", "")}} for r in codes
        ]
        plugins["code_interpreter"] = {"count": len(codes)}
    return output, plugins


def search_sources(job: Job, reports: Sequence[ToolReport]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``output.search_info`` and ``usage.plugins`` when the request asked for sources (spec §4.8)."""
    options = job.request.search_options
    searches = [r for r in reports if r.name == "search"]
    if options is None or not options.enable_source or not searches:
        return None, None
    results = [dict(hit) for r in searches for hit in r.info.get("search_results", ())]
    plugins = {"search": {"count": len(searches), "strategy": options.search_strategy}}
    return {"search_results": results}, plugins


def result_format(options: NativeOptions, job: Job) -> str:
    """The asked format, else the name's default, else ``message`` for a thinking answer (its reasoning
    needs it), else ``text``."""
    if options.result_format is not None:
        return options.result_format
    if job.policy.result_format is not None:
        return job.policy.result_format
    return "message" if job.is_thinking else "text"


def is_incremental(options: NativeOptions, job: Job) -> bool:
    """``incremental_output`` as asked, else the name's default, else cumulative."""
    if options.incremental is not None:
        return options.incremental
    return bool(job.policy.incremental_output)


def _content(text: str, multimodal: bool) -> Any:
    return [{"text": text}] if multimodal else text


def _call(index: int, call_id: str, name: str | None, arguments: str) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments} if name is None else {"name": name, "arguments": arguments}
    out: dict[str, Any] = {"index": index, "type": "function", "function": function}
    if call_id:
        out["id"] = call_id
    return out


def native_completion(answer: FoldedAnswer, job: Job, options: NativeOptions) -> dict[str, Any]:
    usage = native_usage(answer.usage) if answer.usage is not None else {}
    extra, plugins = tool_fields(job, answer.tool_reports)
    if plugins:
        usage["plugins"] = plugins
    body: dict[str, Any] = {"output": {}, "usage": usage, "request_id": job.request_id}
    if result_format(options, job) == "text":
        first = answer.choices[0]
        body["output"] = {"text": first.content, "finish_reason": first.finish_reason}
    else:
        body["output"] = {"choices": _choices(answer, options)}
    body["output"].update(extra)
    return body


def _choices(answer: FoldedAnswer, options: NativeOptions) -> list[dict[str, Any]]:
    choices = []
    for c in answer.choices:
        message: dict[str, Any] = {"role": "assistant", "content": _content(c.content, options.multimodal)}
        if c.reasoning_content is not None:
            message["reasoning_content"] = c.reasoning_content
        if c.tool_calls:
            message["tool_calls"] = [_call(i, t.id, t.name, t.arguments) for i, t in enumerate(c.tool_calls)]
        choices.append({"finish_reason": c.finish_reason, "message": message, "index": c.index})
    return choices


@dataclass(slots=True)
class _Choice:
    content: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None


class NativeStream:
    """One streaming request: an event per delta, the finish held until the exact usage arrives."""

    def __init__(self, job: Job, options: NativeOptions) -> None:
        self._job = job
        self._options = options
        self._text = result_format(options, job) == "text"
        self._incremental = is_incremental(options, job)
        self._choices: dict[int, _Choice] = {}
        self._id = 0
        self._pieces = 0  # output pieces sent so far: the running output_tokens until the engine's count
        self._usage: Usage | None = None
        self._reports: list[ToolReport] = []

    def render(self, event: ChatEvent) -> bytes | None:
        if isinstance(event, KeepAlive):
            return b": keep-alive\n\n"
        if isinstance(event, ToolReport):
            self._reports.append(event)
            return None
        if isinstance(event, UsageReport):
            self._usage = event.usage
            return self._finishes()
        if isinstance(event, Finish):
            self._choice(event.choice).finish = event.reason
            return None
        if isinstance(event, AudioDelta):  # always incremental: each event carries the next piece only
            return self._frame(event.choice, {}, STREAMING, audio=audio_json(event, self._job.created))
        if not isinstance(event, Delta):
            return None
        self._pieces += 1
        delta = self._apply(event)
        if self._text and not isinstance(event, ContentDelta):
            return None  # text format carries the content only
        return self._frame(event.choice, delta, STREAMING)

    def end(self) -> bytes:
        return self._finishes()  # normally empty: the UsageReport already closed every choice

    def error(self, exc: ServeError, request_id: str) -> bytes:
        self._id += 1
        data = dumps(native_error_body(exc, request_id))
        return f"id:{self._id}\nevent:error\n:HTTP_STATUS/{exc.status}\ndata:{data}\n\n".encode()

    def _choice(self, index: int) -> _Choice:
        return self._choices.setdefault(index, _Choice())

    def _apply(self, event: Delta) -> dict[str, Any]:
        """Adds the delta to the choice's running state; returns the increment as message fields."""
        state = self._choice(event.choice)
        if isinstance(event, ContentDelta):
            state.content += event.text
            return {"content": event.text}
        if isinstance(event, ReasoningDelta):
            state.reasoning += event.text
            return {"reasoning_content": event.text}
        if isinstance(event, ToolCallStart):
            state.calls[event.index] = _call(event.index, event.id, event.name, "")
            return {"tool_calls": [_call(event.index, event.id, event.name, "")]}
        state.calls[event.index]["function"]["arguments"] += event.text
        return {"tool_calls": [_call(event.index, "", None, event.text)]}

    def _finishes(self) -> bytes:
        out = b""
        for index, state in sorted(self._choices.items()):
            if state.finish is not None:
                out += self._frame(index, {}, state.finish)
                state.finish = None
        return out

    def _frame(self, index: int, delta: dict[str, Any], finish: str, audio: dict[str, Any] | None = None) -> bytes:
        state = self._choice(index)
        if self._incremental:
            fields = {"content": "", **delta}
        else:
            fields = {"content": state.content}
            if state.reasoning:
                fields["reasoning_content"] = state.reasoning
            if state.calls:
                fields["tool_calls"] = list(state.calls.values())
        if self._text:
            output: dict[str, Any] = {"text": fields["content"], "finish_reason": finish}
        else:
            message = {"role": "assistant", **fields, "content": _content(fields["content"], self._options.multimodal)}
            output = {"choices": [{"finish_reason": finish, "message": message, "index": index}]}
        extra, plugins = tool_fields(self._job, self._reports)
        usage = self._running_usage()
        output.update(extra)
        if audio is not None:
            output["audio"] = {**audio, "id": self._job.request_id}  # Omni's output.audio (native §3.1)
        if plugins:
            usage["plugins"] = plugins
        self._id += 1
        payload = {"output": output, "usage": usage, "request_id": self._job.request_id}
        return f"id:{self._id}\nevent:result\n:HTTP_STATUS/200\ndata:{dumps(payload)}\n\n".encode()

    def _running_usage(self) -> dict[str, Any]:
        if self._usage is not None:
            return native_usage(self._usage)
        prompt = len(self._job.prompt.tokens)
        return {"input_tokens": prompt, "output_tokens": self._pieces, "total_tokens": prompt + self._pieces}
