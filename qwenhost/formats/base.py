"""The record that says how a model family speaks: think tags, tool-call syntax, template switches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ThinkingMode = Literal["none", "hybrid", "always"]
ToolSyntax = Literal["hermes_json", "qwen_xml"]


@dataclass(frozen=True, slots=True)
class ModelFormat:
    name: str
    thinking: ThinkingMode = "none"
    thinking_default: bool = False  # hybrid families: whether thinking is on when the request is silent
    think_open: str = "<think>"
    think_close: str = "</think>"
    tool_syntax: ToolSyntax = "hermes_json"
    tool_open: str = "<tool_call>"
    tool_close: str = "</tool_call>"
    soft_switch: bool = False  # /think and /no_think in user text (open-source Qwen3)
    thinking_kwarg: str | None = "enable_thinking"  # template variable that switches thinking
    stream_only_thinking: bool = False  # DashScope refuses non-streaming thinking calls for this family
    stop_strings: tuple[str, ...] = ()
    builtin_template: str = "qwen3"  # the template used when the GGUF has none (or lacks tool support)

    @property
    def has_thinking(self) -> bool:
        return self.thinking != "none"
