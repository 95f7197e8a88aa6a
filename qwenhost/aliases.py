"""DashScope model names as aliases: a name plus the defaults DashScope documents for it (spec §4.4, §1.4).

A policy value of None keeps the served model's own default (its family's, or its [[models]] setting).
The commercial names answer without thinking by default (qwen3.5-plus/-flash think, as documented) and
allow non-streaming calls; the open-source
names keep the family's defaults (thinking and stream-only thinking on a hybrid Qwen3); the vision names
are served by the model that has a multimodal projector. TOML overrides any of this per name
([alias_policy."<name>"], config.py); docs/models.md has the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from qwenhost.core.types import SamplingOverrides

Route = Literal["default", "vision"]
ROUTES: tuple[str, ...] = ("default", "vision")

# Commercial names (spec §4.4 "thinking off by default", commercial models accept non-streaming thinking).
COMMERCIAL_TEXT = (
    "qwen-plus",
    "qwen-plus-latest",
    "qwen-turbo",
    "qwen-turbo-latest",
    "qwen-flash",
    "qwen-max",
    "qwen-max-latest",
    "qwen-long",
    "qwen3-max",
)
# Qwen3.5 commercial names: thinking on by default (spec §4.4), non-streaming thinking allowed (commercial).
COMMERCIAL_THINKING = ("qwen3.5-plus", "qwen3.5-flash")
# Open-source Qwen3 names (spec §4.4 "thinking on by default"; stream-only thinking as DashScope).
OPEN_SOURCE_TEXT = (
    "qwen3-0.6b",
    "qwen3-1.7b",
    "qwen3-4b",
    "qwen3-8b",
    "qwen3-14b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
)
# The text names the default model answers (the command line's --model, or the embedded model).
DEFAULT_TEXT_ALIASES = COMMERCIAL_TEXT + COMMERCIAL_THINKING + OPEN_SOURCE_TEXT
# Vision names listed by GET /models when a vision model is served; any qwen-vl-* / qwen3-vl-* name routes.
VISION_NAMES = ("qwen-vl-plus", "qwen-vl-max", "qwen3-vl-plus", "qwen3-vl-flash")
VISION_PATTERN = re.compile(r"qwen3?-vl-[\w.-]+")

# Omni and Qwen-MT names: answered by the default model until a dedicated one is configured (a name in a
# [[models]] aliases list). It answers in text: audio output and translation_options are refused with
# DashScope's "This model does not support X." until the speech and translation policies exist.
DEFAULT_ROUTED_NAMES = ("qwen-omni-turbo", "qwen3-omni-flash", "qwen-mt-plus", "qwen-mt-turbo")
DEFAULT_ROUTED_PATTERN = re.compile(r"qwen3?-omni-[\w.-]+|qwen-mt-[\w.-]+")

NO_VISION_MODEL = (
    "The model `{}` is a vision model, and no served model reads images. Configure one: a [[models]] entry "
    'with mmproj = "<projector>.gguf" (or --mmproj on the command line) and aliases = ["{}"] if it is not '
    "found by its qwen-vl-*/qwen3-vl-* name."
)


@dataclass(frozen=True, slots=True)
class AliasPolicy:
    """The defaults a name brings to the model that serves it; None: the served model's own."""

    route: str = "default"  # "default": the model that lists the name; "vision": the first model with mmproj
    thinking_default: bool | None = None  # hybrid families only; always-on and non-thinking families keep theirs
    stream_only_thinking: bool | None = None
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    sampling_thinking: SamplingOverrides = field(default_factory=SamplingOverrides)
    # The native protocol's defaults for the name (spec native §3, [DOC-ZH]); None: text (message when the
    # answer thinks) and cumulative output.
    result_format: str | None = None
    incremental_output: bool | None = None

    def describe(self) -> dict[str, object]:
        """The policy as GET /models shows it (None: the served model's default)."""

        def keys(overrides: SamplingOverrides) -> dict[str, object]:
            return {k: getattr(overrides, k) for k in SAMPLING_FIELDS if getattr(overrides, k) is not None}

        return {
            "route": self.route,
            "thinking_default": self.thinking_default,
            "stream_only_thinking": self.stream_only_thinking,
            "sampling": keys(self.sampling),
            "sampling_thinking": keys(self.sampling_thinking),
            "result_format": self.result_format,
            "incremental_output": self.incremental_output,
        }


SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
)

MODEL_DEFAULTS = AliasPolicy()  # a served model's own name, and any alias without a built-in row
_COMMERCIAL = AliasPolicy(thinking_default=False, stream_only_thinking=False)
_VISION = AliasPolicy(route="vision", thinking_default=False, stream_only_thinking=False)

# [DOC-ZH]: result_format defaults to "message" for the open-source Qwen3 names and Qwen-Long, and
# incremental_output to true for the open-source Qwen3 names (native protocol only).
_OPEN_SOURCE = AliasPolicy(result_format="message", incremental_output=True)

BUILTIN_POLICIES: Mapping[str, AliasPolicy] = {
    **{name: _COMMERCIAL for name in COMMERCIAL_TEXT},
    "qwen-long": replace(_COMMERCIAL, result_format="message"),
    **{name: replace(_COMMERCIAL, thinking_default=True) for name in COMMERCIAL_THINKING},
    **{name: _OPEN_SOURCE for name in OPEN_SOURCE_TEXT},
    **{name: _VISION for name in VISION_NAMES},
}


def is_vision_name(name: str) -> bool:
    return VISION_PATTERN.fullmatch(name) is not None


def is_default_routed(name: str) -> bool:
    """A qwen-omni-* / qwen3-omni-* / qwen-mt-* name: answered by the default model when no model lists it."""
    return DEFAULT_ROUTED_PATTERN.fullmatch(name) is not None


def builtin_policy(name: str) -> AliasPolicy:
    """The built-in row for ``name``: a listed name's, a qwen-vl-*/qwen3-vl-* name's, else the model's own."""
    if name in BUILTIN_POLICIES:
        return BUILTIN_POLICIES[name]
    if is_vision_name(name):
        return replace(MODEL_DEFAULTS, route="vision")
    if is_default_routed(name):
        return _COMMERCIAL  # DashScope's Omni and MT names answer without thinking by default
    return MODEL_DEFAULTS
