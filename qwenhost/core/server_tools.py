"""The port between the service's tool loop and a server-side tool (search, the code interpreter)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from qwenhost.core.types import ToolSpec


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """One run of a server-side tool."""

    text: str  # what goes back into the conversation as the tool's message (bounded by the tool)
    info: Mapping[str, Any] = field(default_factory=dict)  # what a dialect may show (search results, the code)


class ServerTool(Protocol):
    """A tool the model calls by a reserved name and the server runs (spec §4.8, §4.9)."""

    @property
    def name(self) -> str:
        """The reserved function name (``search``, ``code_interpreter``): a client's tool may not take it."""
        ...

    def definition(self) -> ToolSpec:
        """The function the model is shown."""
        ...

    async def run(self, arguments: Mapping[str, Any], *, timeout_s: float) -> ToolOutcome:
        """Run once. Cancelling the awaiting task must stop the work (kill a sandbox, close a socket)."""
        ...
