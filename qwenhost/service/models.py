"""Served models: a backend plus its template, family and limits, found by name or alias."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from qwenhost.config import ModelConfig
from qwenhost.core.errors import ModelNotFound
from qwenhost.engine.protocol import Backend
from qwenhost.formats.base import ModelFormat
from qwenhost.templates.renderer import ChatTemplate


@dataclass(frozen=True)
class ServedModel:
    config: ModelConfig
    backend: Backend
    template: ChatTemplate
    tool_template: ChatTemplate  # the model's own when it renders tools, else the built-in Qwen one
    format: ModelFormat
    context_length: int
    max_output_tokens: int
    created: int

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def max_input_tokens(self) -> int:
        return self.context_length - 1

    def capabilities(self) -> dict[str, object]:
        return {
            "family": self.format.name,
            "thinking": self.format.thinking,
            "thinking_default": self.format.thinking_default,
            "tool_syntax": self.format.tool_syntax,
            "context_length": self.context_length,
            "max_output_tokens": self.max_output_tokens,
            "parallel": self.config.parallel,
            "template": self.template.origin,
            **self._media_capabilities(),
        }

    def _media_capabilities(self) -> dict[str, object]:
        caps = self.backend.info.media
        if caps is None:
            return {}
        return {
            "vision": caps.vision_projector,
            "audio": caps.audio_projector,
            "pixels_per_token_side": caps.pixels_per_token_side if caps.vision_projector else None,
        }


class ModelRegistry:
    def __init__(self, models: list[ServedModel]) -> None:
        self._models = models
        self._by_name: dict[str, ServedModel] = {}
        for model in models:
            for name in (model.name, *model.config.aliases):
                self._by_name[name] = model

    def resolve(self, name: str) -> ServedModel:
        try:
            return self._by_name[name]
        except KeyError:
            raise ModelNotFound(name) from None

    def names(self) -> Iterator[tuple[str, ServedModel]]:
        for model in self._models:
            yield model.name, model
            for alias in model.config.aliases:
                yield alias, model

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)
