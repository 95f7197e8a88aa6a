"""The record that says how a model family speaks: think tags, tool-call syntax, template switches, defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qwenhost.core.types import SamplingParams

ThinkingMode = Literal["none", "hybrid", "always"]
ToolSyntax = Literal["hermes_json", "qwen_xml"]

# DashScope's messages for thinking calls made without stream=true (spec §3.1, §3.3, §4.4).
QWEN3_STREAM_ONLY = "parameter.enable_thinking must be set to false for non-streaming calls"
QWQ_STREAM_ONLY = "This model only support stream mode, please enable the stream parameter to access the model."

# Spec §1.4 "others": the values of the commercial qwen-plus/flash/turbo aliases.
GENERIC_SAMPLING = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=0.0, repetition_penalty=1.05)
GENERIC_THINKING_SAMPLING = SamplingParams(
    temperature=0.6, top_p=0.95, top_k=20, presence_penalty=0.0, repetition_penalty=1.05
)


@dataclass(frozen=True, slots=True)
class Signature:
    """One way a GGUF shows that it belongs to a family: every given clue must hold."""

    architectures: tuple[str, ...] = ()  # general.architecture values (empty: any)
    template_has: tuple[str, ...] = ()  # all of these appear in the chat template source
    template_lacks: tuple[str, ...] = ()  # none of these appear in it
    special_tokens: tuple[str, ...] = ()  # used only when the GGUF has no chat template


@dataclass(frozen=True, slots=True)
class ModelFormat:
    name: str
    description: str = ""
    thinking: ThinkingMode = "none"
    thinking_default: bool = False  # hybrid families: whether thinking is on when the request is silent
    think_prefill: bool = False  # the generation prompt opens the thought itself (`<think>\n`) when thinking is on
    think_open: str = "<think>"
    think_close: str = "</think>"
    tool_syntax: ToolSyntax = "hermes_json"
    tool_open: str = "<tool_call>"
    tool_close: str = "</tool_call>"
    soft_switch: bool = False  # /think and /no_think in user or system text (open-source Qwen3, spec §4.4)
    thinking_kwarg: str | None = "enable_thinking"  # template variable that switches thinking
    stream_only_thinking: bool = False  # DashScope refuses non-streaming thinking calls for this family
    stream_only_message: str = QWEN3_STREAM_ONLY
    stop_strings: tuple[str, ...] = ()
    builtin_template: str = "qwen3"  # the template used when the GGUF has none (or lacks tool support)
    sampling: SamplingParams = GENERIC_SAMPLING  # defaults with thinking off (spec §1.4)
    sampling_thinking: SamplingParams = GENERIC_THINKING_SAMPLING  # defaults with thinking on
    signature: tuple[Signature, ...] = ()  # any one matching is enough

    @property
    def has_thinking(self) -> bool:
        return self.thinking != "none"

    def default_sampling(self, is_thinking: bool) -> SamplingParams:
        return self.sampling_thinking if is_thinking else self.sampling
