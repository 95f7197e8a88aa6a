"""The config tables of the features around the model: the upload store, the team store and its limits, web
search and the code interpreter. config.py reads the file and hands each table here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwenhost.config_source import Source
from qwenhost.tools.sandbox.config import SandboxConfig
from qwenhost.tools.search.config import SearchConfig


def default_store_path(env: Mapping[str, str] | None = None) -> str:
    """$XDG_DATA_HOME/qwenhost/qwenhost.db, else ~/.local/share/qwenhost/qwenhost.db."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return str(Path(base) / "qwenhost" / "qwenhost.db")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """[store]: keys, the usage ledger and rate-limit windows (docs/team.md)."""

    enabled: bool = True
    path: str | None = None  # the SQLite file; None: default_store_path()
    url: str | None = None  # postgresql://user:pass@host/db instead of the SQLite file
    timeout_s: float = 5.0  # connect, lock and statement waits; past it the request gets 503
    max_pending: int = 256  # store calls waiting at once; more get 503
    metrics_keys: tuple[str, ...] = ()  # key names with their own Prometheus labels (others: "other")

    def resolved_url(self) -> str:
        return self.url or f"sqlite:///{Path(self.path or default_store_path()).expanduser()}"


@dataclass(frozen=True, slots=True)
class ModelLimit:
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """[limits]: per key on each model ([limits.models."<name>"] for one served model, rpm/tpm here for the
    others); a key's own limits are set on the key. burst_factor: a second may use that many times rpm/60."""

    rpm: int | None = None
    tpm: int | None = None
    burst_factor: float = 2.0
    models: tuple[tuple[str, ModelLimit], ...] = ()


@dataclass(frozen=True, slots=True)
class UploadsConfig:
    """[uploads]: the local object store behind the SDK's upload-policy flow (docs/native-protocol.md)."""

    enabled: bool = True
    directory: str | None = None  # None: a fresh temporary directory for each run, removed at shutdown
    max_file_bytes: int = 100 * 1024 * 1024  # DashScope's max_file_size_mb (100)
    capacity_bytes: int = 2 * 1024 * 1024 * 1024  # all live objects together
    expiry_s: float = 48 * 3600.0  # DashScope keeps temporary uploads 48 h


def parse_uploads(raw: Any, source: Source) -> UploadsConfig:
    """The [uploads] table; a bound that would refuse every upload is a mistake, not a setting."""
    config = UploadsConfig(**source.table(raw, UploadsConfig, "[uploads]"))
    for name in ("max_file_bytes", "capacity_bytes"):
        if getattr(config, name) < 1:
            raise source.error(f"[uploads].{name}", "must be at least 1")
    if config.capacity_bytes < config.max_file_bytes:
        raise source.error("[uploads].capacity_bytes", "must be at least max_file_bytes (one largest file must fit)")
    if config.expiry_s <= 0:
        raise source.error("[uploads].expiry_s", "must be more than 0")
    if config.directory is not None and not config.directory.strip():
        raise source.error("[uploads].directory", "must name a directory (leave it out for a temporary one)")
    return config


def parse_store(raw: Any, source: Source) -> StoreConfig:
    store = StoreConfig(**source.table(raw, StoreConfig, "[store]"))
    if store.url is not None and not store.url.startswith(("postgresql://", "postgresql+psycopg://", "sqlite:///")):
        raise source.error("[store].url", "must start with postgresql:// (or sqlite:///); set path for a SQLite file")
    if store.timeout_s <= 0:
        raise source.error("[store].timeout_s", "must be more than 0")
    if store.max_pending < 1:
        raise source.error("[store].max_pending", "must be at least 1")
    return store


def _limit_values(values: Mapping[str, Any], where: str, source: Source) -> None:
    for key in ("rpm", "tpm"):
        if values.get(key) is not None and values[key] < 1:
            raise source.error(f"{where}.{key}", "must be at least 1 (leave it out for no limit)")


def parse_limits(raw: Any, source: Source) -> LimitsConfig:
    values = source.table(raw, LimitsConfig, "[limits]", nested=("models",))
    _limit_values(values, "[limits]", source)
    if values.get("burst_factor", 1.0) <= 0:
        raise source.error("[limits].burst_factor", "must be more than 0")
    models = raw.get("models", {})
    if not isinstance(models, Mapping):
        raise source.error("[limits.models]", 'must be a table of tables ([limits.models."qwen-plus"])')
    out = []
    for name, table in models.items():
        where = f"[limits.models.{name!r}]"
        limit = source.table(table, ModelLimit, where)
        _limit_values(limit, where, source)
        out.append((name, ModelLimit(**limit)))
    return LimitsConfig(**values, models=tuple(out))


def parse_search(raw: Any, env: Mapping[str, str], source: Source) -> SearchConfig:
    """The [search] table (docs/search.md); API keys may come from the environment instead of the file."""
    config = SearchConfig(**source.table(raw, SearchConfig, "[search]"))
    if config.brave_api_key is None and env.get("QWENHOST_BRAVE_API_KEY"):
        config = replace(config, brave_api_key=env["QWENHOST_BRAVE_API_KEY"])
    if config.tavily_api_key is None and env.get("QWENHOST_TAVILY_API_KEY"):
        config = replace(config, tavily_api_key=env["QWENHOST_TAVILY_API_KEY"])
    problems = config.problems()
    if problems:
        raise source.error("[search]", "; ".join(problems))
    return config


@dataclass(frozen=True, slots=True)
class CodeInterpreterConfig:
    """[code_interpreter]: whether enable_code_interpreter is served, how many runs one answer may make, and
    the sandbox's limits (the other keys of the table; docs/code-interpreter.md)."""

    enabled: bool = True
    max_calls: int = 3  # code runs per request; the model answers after the last
    test_pinned_code: str | None = None  # test seam: the one program the tool allows ([server] test_faults only)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)


def parse_code_interpreter(raw: Any, source: Source) -> CodeInterpreterConfig:
    if not isinstance(raw, Mapping):
        raise source.error("[code_interpreter]", "must be a table")
    own = {k: raw[k] for k in ("enabled", "max_calls", "test_pinned_code") if k in raw}
    values = source.table(own, CodeInterpreterConfig, "[code_interpreter]", internal=("sandbox",))
    rest = {k: v for k, v in raw.items() if k not in own}
    sandbox_values = source.table(rest, SandboxConfig, "[code_interpreter]")
    if values.get("max_calls", 1) < 1:
        raise source.error("[code_interpreter].max_calls", "must be at least 1")
    try:
        sandbox = SandboxConfig(**sandbox_values)
    except ValueError as exc:
        raise source.error("[code_interpreter]", str(exc)) from None
    return CodeInterpreterConfig(**values, sandbox=sandbox)
