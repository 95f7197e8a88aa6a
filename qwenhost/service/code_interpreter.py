"""``enable_code_interpreter`` as a feature of the tool loop (spec §4.9; docs/code-interpreter.md): thinking
and streaming only, the reserved ``code_interpreter`` tool, and the sandbox behind it, checked at start-up
and tried for real once, off the event loop, before its first use."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from dataclasses import replace

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import ChatRequest
from qwenhost.service.tool_loop import Offer
from qwenhost.tools.sandbox.config import SandboxConfig
from qwenhost.tools.sandbox.probe import SandboxUnavailable, prepare_sandbox, try_run
from qwenhost.tools.sandbox.runner import Sandbox
from qwenhost.tools.sandbox.tool import CodeInterpreterTool

log = logging.getLogger("qwenhost.tools")

# DashScope documents the rules (thinking and streaming only) but no refusal text (spec §7): these are ours.
NEEDS_STREAM = "enable_code_interpreter requires stream to be true (the code runs between streamed thoughts)."
NEEDS_THINKING = "enable_code_interpreter requires enable_thinking to be true."
UNAVAILABLE = "enable_code_interpreter is unavailable on this server: {}"


class SandboxGate:
    """The sandbox, prepared at start-up (programs, root, uid pool, seccomp filter: a missing piece is logged
    at once and every request is refused saying it), then tried with one real run, on its own thread, when
    the first request needs it: a server that never runs code pays nothing for the try."""

    def __init__(self, config: SandboxConfig, pinned_code: str | None = None) -> None:
        self.config = config
        self._pinned = pinned_code
        self._tool: CodeInterpreterTool | None = None
        self._tried: Future[str | None] = Future()
        self._is_trying = False
        self._sandbox: Sandbox | None = None  # prepared once; its pool binds to the loop of its first run
        try:
            self._sandbox = prepare_sandbox(config)
        except SandboxUnavailable as exc:
            log.warning("enable_code_interpreter is refused on this server: %s", exc)
            self._tried.set_result(str(exc))

    def _try(self) -> None:
        assert self._sandbox is not None  # tried only once prepared
        try:
            reason = try_run(self._sandbox)
        except Exception as exc:  # a probe that fails in an unforeseen way still leaves the feature refused
            reason = f"the sandbox test run failed: {exc!r}"
        if reason is None:
            log.info("code interpreter: sandboxed runs work (bubblewrap, seccomp, a uid pool)")
        else:
            log.warning("enable_code_interpreter is refused on this server: %s", reason)
        self._tried.set_result(reason)

    async def tool(self) -> CodeInterpreterTool:
        if not self._tried.done() and not self._is_trying:
            self._is_trying = True  # on the event loop: one thread tries, every request waits for it
            threading.Thread(target=self._try, name="qwenhost-sandbox-probe", daemon=True).start()
        reason = await asyncio.wrap_future(self._tried)
        if reason is not None:
            raise InvalidParameter(UNAVAILABLE.format(reason))
        if self._tool is None:
            assert self._sandbox is not None  # a sandbox that was never prepared has a reason above
            self._tool = CodeInterpreterTool(self._sandbox, self._pinned)
        return self._tool


class CodeInterpreterFeature:
    def __init__(self, gate: SandboxGate, max_calls: int) -> None:
        self.gate = gate
        self.max_calls = max_calls

    def is_asked(self, request: ChatRequest) -> bool:
        return request.enable_code_interpreter

    def admit(self, request: ChatRequest) -> ChatRequest:
        if not request.stream:
            raise InvalidParameter(NEEDS_STREAM)
        if request.enable_thinking is False:
            raise InvalidParameter(NEEDS_THINKING)
        return replace(request, enable_code_interpreter=False, enable_thinking=True)

    async def offer(self, request: ChatRequest) -> Offer:
        tool = await self.gate.tool()
        return Offer(tool=tool, max_calls=self.max_calls, messages=request.messages)
