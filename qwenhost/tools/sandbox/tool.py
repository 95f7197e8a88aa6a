"""The ``code_interpreter`` server tool: the model's code runs in the sandbox, its output goes back (spec §4.9)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qwenhost.core.server_tools import ToolOutcome
from qwenhost.core.types import ToolSpec
from qwenhost.tools.sandbox.runner import CodeTooLong, Sandbox

NAME = "code_interpreter"
DESCRIPTION = (
    "Python sandbox: runs Python 3 code and returns stdout/stderr. Print results explicitly. "
    "numpy and sympy are available; there is no network, and files live only for this run."
)
PARAMETERS: Mapping[str, Any] = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "The Python 3 program to run."}},
    "required": ["code"],
}


class CodeInterpreterTool:
    """A ServerTool over one prepared Sandbox. ``info`` carries the code only, never its output (spec §4.9)."""

    def __init__(self, sandbox: Sandbox, pinned_code: str | None = None) -> None:
        self._sandbox = sandbox
        # A test seam ([code_interpreter] test_pinned_code, only with [server] test_faults): the definition
        # allows this one program, so a random-weight test model writes it through the real grammar.
        self._pinned = pinned_code

    @property
    def name(self) -> str:
        return NAME

    def definition(self) -> ToolSpec:
        if self._pinned is None:
            return ToolSpec(name=NAME, description=DESCRIPTION, parameters=PARAMETERS)
        pinned = {"type": "object", "properties": {"code": {"const": self._pinned}}, "required": ["code"]}
        return ToolSpec(name=NAME, description=DESCRIPTION, parameters=pinned)

    async def run(self, arguments: Mapping[str, Any], *, timeout_s: float) -> ToolOutcome:
        """Run ``arguments["code"]``; a program the model got wrong becomes a message to it, not an error."""
        code = arguments.get("code")
        if not isinstance(code, str):
            return ToolOutcome(text='error: the arguments must be {"code": "<Python source>"}', info={"code": ""})
        info = {"code": code}
        try:
            result = await self._sandbox.run(code, timeout_s=timeout_s)
        except CodeTooLong as exc:
            return ToolOutcome(text=f"error: not run: {exc}", info=info)
        return ToolOutcome(text=result.summary(), info=info)
