"""``tool_stream`` (spec §1.3 #23): with false, DashScope's default, a streamed tool call's arguments leave
in one delta once the call is complete; with true they stream as they are generated.

DashScope applies this to a call's object and array arguments on Qwen models; qwenhost holds back a
call's whole argument string, which is the same for the calls a client can parse (docs/compatibility.md).
The folded answer is identical either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from qwenhost.core.events import ChatEvent, ToolCallArgsDelta


class ArgumentsAtOnce:
    """Holds each call's argument deltas until the next event of the same choice (its next call, its
    finish), or the end of the answer, then lets them out as one delta."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, int], list[str]] = {}  # (choice, call index) -> argument parts

    def feed(self, events: Iterable[ChatEvent]) -> Iterator[ChatEvent]:
        for event in events:
            if isinstance(event, ToolCallArgsDelta):
                self._held.setdefault((event.choice, event.index), []).append(event.text)
                continue
            choice = getattr(event, "choice", None)
            yield from self.flush(choice)
            yield event

    def flush(self, choice: int | None = None) -> Iterator[ChatEvent]:
        """Let out what is held for ``choice`` (every choice when None)."""
        for key in [k for k in self._held if choice is None or k[0] == choice]:
            parts = self._held.pop(key)
            yield ToolCallArgsDelta(key[0], key[1], "".join(parts))
