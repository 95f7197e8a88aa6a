"""ChatEvents -> DashScope wire JSON: chat.completion.chunk dicts and the folded chat.completion (spec §2)."""

from __future__ import annotations

import base64
from typing import Any

from qwenhost.core.events import (
    AudioDelta,
    ChatEvent,
    ContentDelta,
    Finish,
    FoldedAnswer,
    ReasoningDelta,
    RoleStart,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageReport,
)
from qwenhost.core.types import TokenLogprob, Usage


def logprobs_json(entries: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": e.token,
                "bytes": list(e.bytes),
                "logprob": e.logprob,
                "top_logprobs": [
                    {"token": t.token, "bytes": list(t.bytes), "logprob": t.logprob} for t in e.top_logprobs
                ],
            }
            for e in entries
        ]
    }


def usage_json(usage: Usage) -> dict[str, Any]:
    prompt_details: dict[str, Any] = {"cached_tokens": usage.cache.cached_tokens}
    if usage.cache.is_explicit:
        prompt_details["cache_creation"] = {"ephemeral_5m_input_tokens": usage.cache.cache_creation_tokens}
        prompt_details["cache_creation_input_tokens"] = usage.cache.cache_creation_tokens
        prompt_details["cache_type"] = "ephemeral"
    for key in ("text_tokens", "image_tokens", "video_tokens"):
        value = getattr(usage, key)
        if value is not None:
            prompt_details[key] = value
    prompt_details["audio_tokens"] = usage.audio_tokens  # null for a prompt without audio (spec §2.2)
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "completion_tokens_details": None,  # present as null when there is no breakdown (spec §2.2)
    }
    out["completion_tokens_details"] = completion_details(usage)
    out["prompt_tokens_details"] = prompt_details
    return out


def completion_details(usage: Usage) -> dict[str, Any] | None:
    """reasoning_tokens of a thinking answer, audio_tokens of a spoken one (docs/speech-and-translation.md),
    and text_tokens, the rest; None when there is no breakdown (spec §2.2)."""
    details: dict[str, Any] = {}
    if usage.reasoning_tokens is not None:
        details["reasoning_tokens"] = usage.reasoning_tokens
    if usage.output_audio_tokens is not None:
        details["audio_tokens"] = usage.output_audio_tokens
    if not details:
        return None
    details["text_tokens"] = usage.completion_tokens - sum(details.values())
    return details


def audio_json(event: AudioDelta, created: int) -> dict[str, Any]:
    """``delta.audio`` (spec §4.10): base64 of raw PCM16 mono 24 kHz; ``expires_at`` as Model Studio describes
    it, the request's creation time. Never a ``transcript``: the text is in ``content``."""
    return {"data": base64.b64encode(event.data).decode("ascii"), "expires_at": created}


class ChunkRenderer:
    """Renders one request's events as chunk dicts; all chunks share id, created and model (spec §2.4)."""

    def __init__(self, completion_id: str, model: str, created: int, *, is_thinking: bool = False) -> None:
        self._id = completion_id
        self._model = model
        self._created = created
        self._thinking = is_thinking
        self._args_started: set[tuple[int, int]] = set()

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> dict[str, Any]:
        return {
            "choices": choices,
            "object": "chat.completion.chunk",
            "usage": usage_json(usage) if usage is not None else None,
            "created": self._created,
            "system_fingerprint": None,
            "model": self._model,
            "id": self._id,
        }

    def _choice(
        self, index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> dict[str, Any]:
        return {"delta": delta, "finish_reason": finish, "index": index, "logprobs": logprobs}

    def render(self, event: ChatEvent) -> dict[str, Any] | None:
        if isinstance(event, UsageReport):
            return self._chunk([], event.usage)
        if isinstance(event, RoleStart):
            if event.is_thinking:
                delta: dict[str, Any] = {"content": None, "role": "assistant", "reasoning_content": ""}
            else:
                delta = {"content": "", "role": "assistant"}
            return self._chunk([self._choice(event.choice, delta)])
        if isinstance(event, ContentDelta):
            delta = {"content": event.text}
            if self._thinking:
                delta["reasoning_content"] = None
            lp = logprobs_json(event.logprobs) if event.logprobs else None
            return self._chunk([self._choice(event.choice, delta, logprobs=lp)])
        if isinstance(event, ReasoningDelta):
            return self._chunk([self._choice(event.choice, {"content": None, "reasoning_content": event.text})])
        if isinstance(event, AudioDelta):
            return self._chunk([self._choice(event.choice, {"audio": audio_json(event, self._created)})])
        if isinstance(event, ToolCallStart):
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk([self._choice(event.choice, self._tool_delta(call))])
        if isinstance(event, ToolCallArgsDelta):
            call = {"index": event.index, "id": "", "type": "function", "function": {"arguments": event.text}}
            return self._chunk([self._choice(event.choice, self._tool_delta(call))])
        if isinstance(event, Finish):
            delta = {"content": ""}
            if self._thinking:
                delta["reasoning_content"] = None
            return self._chunk([self._choice(event.choice, delta, finish=event.reason)])
        return None

    def _tool_delta(self, call: dict[str, Any]) -> dict[str, Any]:
        delta: dict[str, Any] = {"content": None}
        if self._thinking:
            delta["reasoning_content"] = None
        delta["tool_calls"] = [call]
        return delta


def completion_json(answer: FoldedAnswer, completion_id: str, model: str, created: int) -> dict[str, Any]:
    choices = []
    for c in answer.choices:
        # refusal, audio and function_call are "always null" in DashScope's field list (spec §2.1).
        message: dict[str, Any] = {
            "role": "assistant",
            "content": c.content,
            "refusal": None,
            "audio": None,
            "function_call": None,
        }
        if c.reasoning_content is not None:
            message["reasoning_content"] = c.reasoning_content
        if c.tool_calls:
            message["tool_calls"] = [
                {
                    "index": i,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for i, call in enumerate(c.tool_calls)
            ]
        choices.append(
            {
                "message": message,
                "finish_reason": c.finish_reason,
                "index": c.index,
                "logprobs": logprobs_json(c.logprobs) if c.logprobs is not None else None,
            }
        )
    return {
        "choices": choices,
        "object": "chat.completion",
        "usage": usage_json(answer.usage) if answer.usage is not None else None,
        "created": created,
        "system_fingerprint": None,
        "service_tier": None,
        "model": model,
        "id": completion_id,
    }
