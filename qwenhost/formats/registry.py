"""The known model families and detection of a GGUF's family from its metadata and template."""

from __future__ import annotations

from collections.abc import Mapping

from qwenhost.formats.base import ModelFormat

CHATML = ModelFormat(name="chatml")
QWEN2_5 = ModelFormat(name="qwen2.5")
QWEN3 = ModelFormat(name="qwen3", thinking="hybrid", thinking_default=True, soft_switch=True, stream_only_thinking=True)

FORMATS: dict[str, ModelFormat] = {f.name: f for f in (CHATML, QWEN2_5, QWEN3)}


def get_format(name: str) -> ModelFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def detect_format(metadata: Mapping[str, str], template: str | None) -> ModelFormat:
    """Pick the family from the GGUF's architecture and chat template (an explicit config wins)."""
    arch = metadata.get("general.architecture", "")
    source = template or ""
    if "enable_thinking" in source and "<think>" in source:
        return QWEN3
    if arch.startswith("qwen2") and "<tool_call>" in source:
        return QWEN2_5
    return CHATML
