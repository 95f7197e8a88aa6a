"""Chat-template rendering in a sandboxed Jinja environment, HF-compatible (tojson, raise_exception …)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateRenderError(Exception):
    """The template refused the conversation (raise_exception) or failed to render."""


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _tojson(
    value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False, ensure_ascii: bool = False
) -> str:
    # transformers' tojson: no HTML escaping and non-ASCII kept, unlike Jinja's built-in filter.
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=tuple(separators) if separators else None,
        sort_keys=sort_keys,
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def builtin_template(name: str) -> str:
    return resources.files("qwenhost.templates.builtin").joinpath(f"{name}.jinja").read_text("utf-8")


class ChatTemplate:
    """A compiled chat template; ``render`` is pure and safe to call from any thread."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", origin: str = "gguf") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self.source = source
        self.origin = origin
        self._template = env.from_string(source)
        self._bos = bos_token
        self._eos = eos_token

    @property
    def supports_tools(self) -> bool:
        return "tools" in self.source

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        try:
            return self._template.render(
                messages=list(messages),
                tools=list(tools) if tools else None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos,
                eos_token=self._eos,
                **kwargs,
            )
        except TemplateRenderError:
            raise
        except (TemplateError, TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
            raise TemplateRenderError(f"the chat template failed to render: {exc}") from exc
