"""The settings tree, read once from a TOML file, the environment and the command line."""

from __future__ import annotations

import hashlib
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
from qwenhost.config_models import EMBEDDED as EMBEDDED
from qwenhost.config_models import KV_CACHE_TYPES as KV_CACHE_TYPES
from qwenhost.config_models import UNQUANTIZED_KV as UNQUANTIZED_KV
from qwenhost.config_models import ModelConfig as ModelConfig
from qwenhost.config_models import check_unique_names, parse_models, parse_sampling
from qwenhost.config_models import embedded_model_path as embedded_model_path
from qwenhost.config_source import ConfigError as ConfigError
from qwenhost.config_source import Source
from qwenhost.media.policy import MediaPolicy
from qwenhost.speech.config import SpeechConfig
from qwenhost.tools.search.config import SearchConfig

# DashScope text model names answered by the default model, so DashScope code runs unchanged; each brings
# its documented defaults (aliases.py), which [alias_policy."<name>"] tables override.
DASHSCOPE_ALIASES = DEFAULT_TEXT_ALIASES

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
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
                values[key] = parse_sampling(table[key], f"{where}.{key}", source)
        if values.get("result_format", "text") not in ("text", "message"):
            raise source.error(
                f"{where}.result_format", f'must be "text" or "message", not {values["result_format"]!r}'
            )
        if values.get("route", "default") not in ROUTES:
            raise source.error(f"{where}.route", f"must be one of {', '.join(ROUTES)}, not {values['route']!r}")
        out.append((name, replace(builtin_policy(name), **values)))
    return tuple(out)


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
    models = parse_models(raw.get("models", []), source, model_path, {k: v for k, v in given.items() if v is not None})
    check_unique_names(models, source)
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
