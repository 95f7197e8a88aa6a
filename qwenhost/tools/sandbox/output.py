"""Bounded reading of a sandbox's stdout and stderr, and the result the model reads."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass

CHUNK = 64 * 1024


class CappedReader:
    """Keeps the first ``cap`` bytes of a stream; past them calls ``on_cap`` once and discards the rest.

    It reads to EOF even after the cap: asyncio only reports a process's exit once its pipes are closed.
    """

    def __init__(self, stream: asyncio.StreamReader, cap: int, on_cap: Callable[[], None]) -> None:
        self._stream = stream
        self._cap = cap
        self._on_cap = on_cap
        self._kept = bytearray()
        self.truncated = False

    async def drain(self) -> None:
        while chunk := await self._stream.read(CHUNK):
            if self.truncated:
                continue
            room = self._cap - len(self._kept)
            self._kept += chunk[:room]
            if len(chunk) > room:
                self.truncated = True
                self._on_cap()

    def text(self) -> str:
        return self._kept.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """One finished run."""

    stdout: str
    stderr: str
    exit_status: int  # bwrap's status: the program's exit code, or 128 + the signal that ended it
    stopped: str | None  # why the parent stopped it: "wall-clock", "output-cap", or None
    stdout_truncated: bool
    stderr_truncated: bool
    duration_s: float
    cpu_seconds: int  # the limits it ran under, for the summary
    wall_timeout_s: float
    output_cap_bytes: int

    @property
    def ok(self) -> bool:
        return self.stopped is None and self.exit_status == 0

    def status_line(self) -> str:
        """Why the program ended, in words for the model."""
        if self.stopped == "wall-clock":
            return f"stopped: the wall-clock limit of {self.wall_timeout_s:g} s was reached"
        if self.stopped == "output-cap":
            return f"stopped: the output passed {self.output_cap_bytes} bytes"
        if self.exit_status == 128 + signal.SIGXCPU:
            return f"stopped: the CPU time limit of {self.cpu_seconds} s was reached"
        if self.exit_status == 128 + signal.SIGKILL:
            return "stopped: killed (SIGKILL) by a CPU time or memory limit"
        if self.exit_status > 128:
            return f"stopped: killed by signal {signal.Signals(self.exit_status - 128).name}"
        return f"exit status: {self.exit_status}"

    def summary(self) -> str:
        """stdout, stderr and the ending, bounded by the output cap (twice, plus a few lines)."""
        parts: list[str] = []
        for name, text, cut in (
            ("stdout", self.stdout, self.stdout_truncated),
            ("stderr", self.stderr, self.stderr_truncated),
        ):
            if text or cut:
                note = f"\n[{name} truncated at {self.output_cap_bytes} bytes]" if cut else ""
                parts.append(f"{name}:\n{text.rstrip()}{note}")
        if not parts:
            parts.append("(no output: print the results you want to see)")
        parts.append(self.status_line())
        return "\n".join(parts)
