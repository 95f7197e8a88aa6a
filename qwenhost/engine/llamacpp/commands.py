"""What other threads ask of the engine thread (typed commands) and what it hands back (deliveries)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qwenhost.core.errors import ServeError
from qwenhost.engine.protocol import GenerationRequest, PromptDone, StepOut


@dataclass(frozen=True, slots=True)
class Submit:
    request: GenerationRequest


@dataclass(frozen=True, slots=True)
class Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class MediaDone:
    """The encoder thread finished the span with content key ``key`` (``array`` None: it failed)."""

    key: int
    array: np.ndarray | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class CancelAll:
    """End every request in flight with ``error`` (graceful shutdown)."""

    error: ServeError


@dataclass(frozen=True, slots=True)
class Stop:
    """Leave the loop; what is left is failed with ServiceUnavailable."""


Command = Submit | Abort | MediaDone | CancelAll | Stop


@dataclass(frozen=True, slots=True)
class Delivery:
    """One item for one request's stream; an error is always the request's last delivery."""

    request_id: str
    item: PromptDone | StepOut | ServeError

    @property
    def is_error(self) -> bool:
        return isinstance(self.item, ServeError)


# Called on the engine thread once per step with every delivery of that step; must not block.
Publish = Callable[[list[Delivery]], None]
