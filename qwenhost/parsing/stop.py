"""Incremental stop-string matching: text before a stop string is released, the stop text never is."""

from __future__ import annotations

from collections.abc import Sequence

from qwenhost.parsing.base import partial_suffix


class StopMatcher:
    """``feed()`` returns (text safe to release, whether a stop string completed). The matched stop
    string and anything after it are dropped (OpenAI convention; spec §4.5, §7.18)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.is_stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        if self.is_stopped:
            return "", True
        if not self._stops:
            return text, False
        buf = self._held + text
        cut = -1
        for stop in self._stops:
            i = buf.find(stop)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
        if cut >= 0:
            self.is_stopped = True
            self._held = ""
            return buf[:cut], True
        keep = max(partial_suffix(buf, stop) for stop in self._stops)  # a stop may be completing
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """At the end of generation the held-back text was not a stop string after all."""
        held, self._held = self._held, ""
        return "" if self.is_stopped else held
