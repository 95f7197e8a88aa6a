"""The Job: one prepared request, frozen — everything run() needs, and the engine room it holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qwenhost.aliases import MODEL_DEFAULTS, AliasPolicy
from qwenhost.core import ids
from qwenhost.core.types import ChatRequest
from qwenhost.engine.protocol import GenerationRequest, Reservation
from qwenhost.service.models import ServedModel
from qwenhost.service.prompt import RenderedPrompt
from qwenhost.service.turn import ThoughtState

if TYPE_CHECKING:
    from qwenhost.service.tool_loop import ToolSession


@dataclass(frozen=True)
class Job:
    """Usage is not on the job: run() reports it once, in its UsageReport event."""

    request: ChatRequest
    model: ServedModel
    prompt: RenderedPrompt
    generation: GenerationRequest
    stop_strings: tuple[str, ...]
    request_id: str
    created: int
    reservation: Reservation  # released when run() ends, or by close() if it never runs
    is_thinking: bool = False
    thought: ThoughtState = "closed"  # where the prompt leaves the thought (service/turn.py)
    deadline_s: float | None = None
    modal_tokens: tuple[tuple[str, int], ...] = ()  # image/video/audio prompt tokens, by modality
    notes: tuple[str, ...] = ()  # parameters read differently from what was asked (x-qwenhost-adjusted)
    policy: AliasPolicy = MODEL_DEFAULTS  # the requested name's defaults (the native dialect reads its own)
    tools: ToolSession | None = None  # server-side tools (service/tool_loop.py); None: a plain answer

    def close(self) -> None:
        """Give the engine's room back (idempotent): for a job that is dropped before or after run()."""
        self.reservation.release()

    @property
    def completion_id(self) -> str:
        return ids.completion_id(self.request_id)

    @property
    def model_name(self) -> str:
        return self.request.model  # the response echoes the requested name (alias or not)
