"""Served models: a backend plus its template, family and limits, found by name or alias."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import cached_property

from qwenhost.aliases import (
    DEFAULT_ROUTED_NAMES,
    NO_VISION_MODEL,
    VISION_NAMES,
    AliasPolicy,
    builtin_policy,
    is_default_routed,
)
from qwenhost.config import ModelConfig
from qwenhost.core.errors import ModelNotFound
from qwenhost.core.types import SamplingParams
from qwenhost.engine.protocol import Backend
from qwenhost.formats.base import ModelFormat
from qwenhost.templates.renderer import ChatTemplate, builtin_template


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a request's decisions may read about a model (service/plan.py): its family, limits and
    defaults, and no backend, so the decisions are pure and testable without an engine."""

    name: str
    format: ModelFormat
    context_length: int
    max_output_tokens: int
    thinking_default: bool
    is_stream_only_thinking: bool
    sampling: SamplingParams  # defaults with thinking off: the family's, with the config's keys over them
    sampling_thinking: SamplingParams
    n_vocab: int
    end_tokens: frozenset[int] = frozenset()

    @property
    def max_input_tokens(self) -> int:
        return self.context_length - 1

    def sampling_defaults(self, is_thinking: bool) -> SamplingParams:
        return self.sampling_thinking if is_thinking else self.sampling

    def with_policy(self, policy: AliasPolicy) -> ModelSpec:
        """The spec a request under an alias sees: the alias's defaults over the model's (aliases.py).
        The thinking default is the alias's only on a hybrid family (always-on and non-thinking keep theirs)."""
        thinking = self.thinking_default
        if self.format.thinking == "hybrid" and policy.thinking_default is not None:
            thinking = policy.thinking_default
        stream_only = policy.stream_only_thinking
        return replace(
            self,
            thinking_default=thinking,
            is_stream_only_thinking=self.is_stream_only_thinking if stream_only is None else stream_only,
            sampling=policy.sampling.resolve(self.sampling),
            sampling_thinking=policy.sampling_thinking.resolve(self.sampling_thinking),
        )


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

    @property
    def thinking_default(self) -> bool:
        """Whether thinking is on when a request is silent: always-on families think, others follow config."""
        if self.format.thinking == "always":
            return True
        if not self.format.has_thinking:
            return False
        configured = self.config.thinking_default
        return self.format.thinking_default if configured is None else configured

    @property
    def is_stream_only_thinking(self) -> bool:
        configured = self.config.stream_only_thinking
        return self.format.stream_only_thinking if configured is None else configured

    @cached_property
    def preserve_template(self) -> ChatTemplate | None:
        """The built-in template, when it renders this family and knows preserve_thinking (JSON tool calls)."""
        if self.format.tool_syntax != "hermes_json":
            return None
        source = builtin_template(self.format.builtin_template)
        if "preserve_thinking" not in source:
            return None
        info = self.backend.info
        origin = f"builtin:{self.format.builtin_template}"
        return ChatTemplate(source, bos_token=info.bos_token, eos_token=info.eos_token, origin=origin)

    def sampling_defaults(self, is_thinking: bool) -> SamplingParams:
        """The family's defaults for the mode (spec §1.4) with the config's keys over them."""
        overrides = self.config.sampling_thinking if is_thinking else self.config.sampling
        return overrides.resolve(self.format.default_sampling(is_thinking))

    @cached_property
    def spec(self) -> ModelSpec:
        """The static view the request decisions read (computed once; the backend is started by now)."""
        info = self.backend.info
        return ModelSpec(
            name=self.name,
            format=self.format,
            context_length=self.context_length,
            max_output_tokens=self.max_output_tokens,
            thinking_default=self.thinking_default,
            is_stream_only_thinking=self.is_stream_only_thinking,
            sampling=self.sampling_defaults(False),
            sampling_thinking=self.sampling_defaults(True),
            n_vocab=info.n_vocab,
            end_tokens=frozenset(info.end_tokens),
        )

    @property
    def reads_images(self) -> bool:
        caps = self.backend.info.media
        return caps is not None and caps.vision_projector is not None

    def capabilities(self, spec: ModelSpec | None = None) -> dict[str, object]:
        """What GET /models shows; ``spec``: the defaults under an alias (the model's own when None)."""
        spec = spec or self.spec

        def sampling(is_thinking: bool) -> dict[str, object]:
            return {k: v for k, v in asdict(spec.sampling_defaults(is_thinking)).items() if k not in ("logit_bias",)}

        has_thinking = self.format.has_thinking
        return {
            "family": self.format.name,
            "thinking": self.format.thinking,
            "thinking_default": spec.thinking_default,
            "soft_switch": self.format.soft_switch,
            "stream_only_thinking": has_thinking and spec.is_stream_only_thinking,
            "partial_mode": True,
            "tool_syntax": self.format.tool_syntax,
            "sampling": sampling(False) if self.format.thinking != "always" else None,
            "sampling_thinking": sampling(True) if has_thinking else None,
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
    """Served models by name or alias, and each name's policy (aliases.py): a name some model lists is that
    model's; an unlisted qwen-vl-*/qwen3-vl-* name (route "vision") is the first model that reads images; an
    unlisted name with a configured [alias_policy] row (route "default") is the first model."""

    def __init__(self, models: list[ServedModel], policies: Iterable[tuple[str, AliasPolicy]] = ()) -> None:
        self._models = models
        self._policies = dict(policies)
        self._by_name: dict[str, ServedModel] = {}
        for model in models:
            for name in (model.name, *model.config.aliases):
                self._by_name[name] = model
        self._vision = next((m for m in models if m.reads_images), None)
        self._specs: dict[str, ModelSpec] = {}

    def policy(self, name: str) -> AliasPolicy:
        return self._policies.get(name) or builtin_policy(name)

    def resolve(self, name: str) -> ServedModel:
        model = self._by_name.get(name)
        if model is not None:
            return model
        policy = self.policy(name)
        if policy.route == "vision":
            if self._vision is None:
                raise ModelNotFound(name, NO_VISION_MODEL.format(name, name))
            return self._vision
        if (name in self._policies or is_default_routed(name)) and self._models:
            return self._models[0]
        raise ModelNotFound(name)

    def spec(self, name: str) -> tuple[ServedModel, ModelSpec]:
        """The model answering ``name`` and its spec under the name's policy."""
        model = self.resolve(name)
        spec = self._specs.get(name)
        if spec is None:
            spec = model.spec.with_policy(self.policy(name))
            if name in self._by_name or name in self._policies or name in (*VISION_NAMES, *DEFAULT_ROUTED_NAMES):
                self._specs[name] = spec  # any qwen-vl-* name resolves: only the known ones are kept
        return model, spec

    def names(self) -> Iterator[tuple[str, ServedModel]]:
        """Every name listed by a model, then the vision names and the configured names that resolve."""
        for model in self._models:
            yield model.name, model
            for alias in model.config.aliases:
                yield alias, model
        for name in dict.fromkeys((*VISION_NAMES, *DEFAULT_ROUTED_NAMES, *self._policies)):
            if name in self._by_name:
                continue
            try:
                served = self.resolve(name)
            except ModelNotFound:
                continue  # a vision name with no vision model served
            yield name, served

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)
