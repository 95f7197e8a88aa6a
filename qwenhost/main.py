"""Composition root: Settings -> engines -> model registry -> chat service -> ASGI app -> uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette

from qwenhost.api.app import create_app
from qwenhost.api.options import EdgeOptions
from qwenhost.api.routes.admin import AdminRoutes
from qwenhost.api.team import TeamHook, TeamServices
from qwenhost.config import (
    UNQUANTIZED_KV,
    ConfigError,
    ModelConfig,
    ServerConfig,
    Settings,
    embedded_model_path,
)
from qwenhost.config_features import UploadsConfig
from qwenhost.core.errors import ServeError
from qwenhost.engine.llamacpp.backend import EngineConfig, LlamaCppBackend
from qwenhost.engine.llamacpp.cpu_probe import extra_buffers_work
from qwenhost.engine.llamacpp.decoder import LoopGuard
from qwenhost.engine.llamacpp.runner import RunnerConfig
from qwenhost.engine.llamacpp.scheduler import SchedulerConfig
from qwenhost.engine.protocol import Backend
from qwenhost.formats.registry import detect_format, get_format
from qwenhost.ops.accounting import Accounting, KeyCounters
from qwenhost.ops.auth import Authenticator, KeyStore
from qwenhost.ops.lifecycle import Lifecycle, drain
from qwenhost.ops.limits import Limit, LimitPolicy
from qwenhost.ops.metrics import Metrics
from qwenhost.ops.store.database import StoreError, StoreSettings, open_engine
from qwenhost.ops.store.keys import has_active_keys
from qwenhost.ops.store.runner import AsyncStore
from qwenhost.ops.uploads import ObjectStore
from qwenhost.service.chat import ChatService
from qwenhost.service.code_interpreter import CodeInterpreterFeature, SandboxGate
from qwenhost.service.media import MediaPipeline
from qwenhost.service.models import ModelRegistry, ServedModel
from qwenhost.service.prepare import NO_AUDIO
from qwenhost.service.search import SearchFeature, page_reader
from qwenhost.service.speech_output import SpeechOutput
from qwenhost.service.tool_loop import ServerFeature, ToolLoop, ToolLoopConfig
from qwenhost.speech.config import SpeechConfig
from qwenhost.speech.engine import EspeakEngine, SpeechError
from qwenhost.templates.renderer import ChatTemplate, builtin_template
from qwenhost.tools.search.config import SearchConfig
from qwenhost.tools.search.local import LocalIndex
from qwenhost.tools.search.provider import SearchProvider
from qwenhost.tools.search.remote import BraveProvider, SearxngProvider, TavilyProvider
from qwenhost.tools.search.searcher import Searcher

log = logging.getLogger("qwenhost")


def weight_repack(mc: ModelConfig) -> bool:
    """The model's setting, or on unless this machine's CPU cannot run the extra buffer types."""
    if mc.weight_repack is not None:
        return mc.weight_repack
    if extra_buffers_work(embedded_model_path()):
        return True
    log.warning(
        "this CPU advertises AMX but a probe decode with llama.cpp's extra buffer types crashed (a VM without "
        "AMX state?): weight repacking is off for %s. Set weight_repack = true in its [[models]] table to force it.",
        mc.name,
    )
    return False


def flash_attn(mc: ModelConfig) -> bool | None:
    """The configured value; unset: off on the CPU (measured slower past ~64 cells of context), llama.cpp's
    auto choice when layers are offloaded to a GPU or the KV cache is quantized."""
    if mc.flash_attn is not None:
        return mc.flash_attn
    if mc.gpu_layers or mc.kv_cache_type not in UNQUANTIZED_KV:  # llama.cpp quantizes V only with it
        return None
    return False


def engine_config(mc: ModelConfig, max_image_tokens: int = 16384) -> EngineConfig:
    threads = mc.threads or os.cpu_count() or 1
    runner = RunnerConfig(
        model_path=mc.resolved_path(),
        num_seq_ids=mc.parallel,
        kv_tokens=mc.kv_cache_tokens,
        batch_tokens=mc.batch_tokens,
        n_threads=threads,
        n_threads_batch=mc.threads_batch or threads,
        context_length=mc.context_length,
        parallel=mc.parallel,
        n_gpu_layers=mc.gpu_layers,
        weight_repack=weight_repack(mc),
        flash_attn=flash_attn(mc),
        kv_cache_type=mc.kv_cache_type,
        kv_split=mc.is_kv_split,
    )
    scheduler = SchedulerConfig(
        num_slots=mc.parallel,
        num_pin_slots=mc.cache_slots,
        batch_tokens=mc.batch_tokens,
        max_waiting=mc.max_waiting,
        queue_timeout_s=mc.queue_timeout_s,
        max_pinned_tokens=mc.max_cached_tokens,
        min_copy_tokens=256 if mc.is_kv_split else 0,
    )
    mmproj = str(Path(mc.mmproj).expanduser()) if mc.mmproj else None
    return EngineConfig(
        runner=runner,
        scheduler=scheduler,
        mmproj=mmproj,
        max_image_tokens=max_image_tokens,
        watchdog_s=mc.watchdog_s,
        loop_guard=LoopGuard(mc.constrained_loop_tokens, mc.constrained_loop_period),
    )


def _load_template(source: str, backend: Backend) -> ChatTemplate:
    info = backend.info
    if source.startswith("builtin:"):
        return ChatTemplate(
            builtin_template(source.removeprefix("builtin:")),
            bos_token=info.bos_token,
            eos_token=info.eos_token,
            origin=source,
        )
    text = Path(source).expanduser().read_text("utf-8")
    return ChatTemplate(text, bos_token=info.bos_token, eos_token=info.eos_token, origin=source)


def served_model(mc: ModelConfig, backend: Backend) -> ServedModel:
    """Wrap a started backend with its template, family and limits."""
    info = backend.info
    template: ChatTemplate | None = None
    if mc.chat_template:
        template = _load_template(mc.chat_template, backend)
    elif info.chat_template:
        template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    # The family is read from the template actually used (a configured one says what the model will see).
    source = template.source if template is not None else None
    fmt = get_format(mc.family) if mc.family else detect_format(info.metadata, source, info.special_tokens)
    if template is None:
        template = _load_template(f"builtin:{fmt.builtin_template}", backend)
    tool_template = template if template.supports_tools else _load_template(f"builtin:{fmt.builtin_template}", backend)
    return ServedModel(
        config=mc,
        backend=backend,
        template=template,
        tool_template=tool_template,
        format=fmt,
        context_length=info.context_length,
        max_output_tokens=mc.max_output_tokens or info.context_length,
        created=int(time.time()),
    )


def load_models(settings: Settings) -> ModelRegistry:
    models = []
    for mc in settings.models:
        log.info("loading %s from %s", mc.name, mc.resolved_path())
        backend = LlamaCppBackend(engine_config(mc, settings.media.max_image_tokens))
        backend.start()
        models.append(served_model(mc, backend))
    return ModelRegistry(models, settings.alias_policy)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, store: Engine | None = None) -> None:
    has_keys = bool(settings.server.api_key_hashes) or (store is not None and has_active_keys(store))
    if not is_loopback(settings.server.host) and not has_keys:
        raise ConfigError(
            f"refusing to listen on {settings.server.host} without API keys: anyone on the network could use "
            "the server. Create one with `qwenhost keys create`, pass --api-key KEY (or QWENHOST_API_KEYS=k1,k2, "
            "or api_keys_file in the config), or bind 127.0.0.1."
        )


def open_uploads(config: UploadsConfig) -> ObjectStore | None:
    """The object store of the upload-policy flow, or None with [uploads] enabled = false."""
    if not config.enabled:
        return None
    try:
        store = ObjectStore.open(
            config.directory,
            max_file_bytes=config.max_file_bytes,
            capacity_bytes=config.capacity_bytes,
            expiry_s=config.expiry_s,
        )
    except OSError as exc:
        raise ConfigError(f"[uploads] directory {config.directory!r} cannot be used: {exc}") from exc
    log.info("uploads for local files kept in %s for %g s each", store.root, config.expiry_s)
    return store


def search_providers(config: SearchConfig) -> list[SearchProvider]:
    """The [search] chain in its order; a provider without its key or URL is skipped per request (not usable)."""
    made: dict[str, SearchProvider] = {
        "local": LocalIndex(config.index_path),
        "searxng": SearxngProvider(config.searxng_url, config.timeout_s),
        "brave": BraveProvider(config.brave_url, config.brave_api_key, config.timeout_s),
        "tavily": TavilyProvider(config.tavily_url, config.tavily_api_key, config.timeout_s),
    }
    chain = [made[name] for name in config.providers]
    log.info(
        "web search providers: %s", ", ".join(f"{p.name}{'' if p.is_usable() else ' (not usable)'}" for p in chain)
    )
    return chain


def tool_loop(settings: Settings, media: MediaPipeline) -> ToolLoop:
    """The server-side tools: search (enable_search) and the code interpreter (enable_code_interpreter),
    each unless its table says enabled = false."""
    config = settings.search
    features: list[ServerFeature] = []
    if config.enabled:
        searcher = Searcher(search_providers(config), config, page_reader(media.fetcher))
        features.append(SearchFeature(searcher))
    code = settings.code_interpreter
    if code.enabled:
        gate = SandboxGate(code.sandbox, code.test_pinned_code)
        features.append(CodeInterpreterFeature(gate, code.max_calls))
    loop_config = ToolLoopConfig(config.max_rounds, config.total_timeout_s, config.keepalive_s)
    return ToolLoop(features, loop_config)


def speech_output(config: SpeechConfig) -> tuple[SpeechOutput | None, str]:
    """The speaker for ``modalities: ["text", "audio"]``, tried once at start; else None and the refusal."""
    if not config.enabled:
        return None, NO_AUDIO
    engine = EspeakEngine(language=config.language, timeout_s=config.timeout_s)
    try:
        engine.probe()
    except SpeechError as exc:
        engine.close()
        log.error("audio output is off: the speech engine cannot start: %s", exc)
        return None, f"Audio output is not available on this server: {exc}"
    engine.close()  # it starts again with the first spoken answer: no resident worker (~29 MiB) until then
    log.info("audio output: %s (language %s)", engine.name, config.language)
    return SpeechOutput(engine, max_pending=config.max_pending), NO_AUDIO


def open_store(settings: Settings) -> Engine | None:
    """The store's engine, migrated (None with [store] enabled = false); a store that cannot open stops the start."""
    if not settings.store.enabled:
        return None
    try:
        return open_engine(StoreSettings(settings.store.resolved_url(), settings.store.timeout_s))
    except (StoreError, SQLAlchemyError) as exc:
        raise ConfigError(f"cannot open the store ([store] in the config): {exc}") from exc


def limit_policy(settings: Settings, registry: ModelRegistry) -> LimitPolicy:
    """[limits] with each [limits.models."<name>"] keyed by the served model its name resolves to."""
    config = settings.limits
    models: dict[str, Limit] = {}
    for name, limit in config.models:
        try:
            served = registry.resolve(name).name
        except ServeError:
            raise ConfigError(f'[limits.models."{name}"]: no served model answers {name!r}') from None
        if served in models:
            raise ConfigError(f'[limits.models."{name}"]: {served} already has limits under another of its names')
        models[served] = Limit(limit.rpm, limit.tpm)
    return LimitPolicy(Limit(config.rpm, config.tpm), models, config.burst_factor)


def team_services(
    settings: Settings, registry: ModelRegistry, engine: Engine, keys: KeyStore, metrics: Metrics
) -> TeamServices:
    store = AsyncStore(engine, timeout_s=settings.store.timeout_s, max_pending=settings.store.max_pending)
    counters = KeyCounters(metrics.registry, settings.store.metrics_keys)
    accounting = Accounting(store, limit_policy(settings, registry), counters)
    return TeamServices(Authenticator(keys, store), TeamHook(accounting, registry), AdminRoutes(store, keys.names))


def build_app(
    settings: Settings, registry: ModelRegistry, lifecycle: Lifecycle | None = None, store: Engine | None = None
) -> Starlette:
    uploads = open_uploads(settings.uploads)
    media = MediaPipeline(settings.media, objects=uploads)
    speech, no_speech = speech_output(settings.speech)
    service = ChatService(
        registry,
        request_timeout_s=settings.server.request_timeout_s,
        cache_isolation=settings.server.cache_isolation,
        media=media,
        tool_loop=tool_loop(settings, media),
        speech=speech,
        no_speech=no_speech,
    )
    # Metric labels come from configured names only (/metrics needs no key: bounded memory).
    names = {name: model.name for name, model in registry.names()}
    metrics = Metrics(lambda: [(m.name, m.backend.stats()) for m in registry], names)
    options = EdgeOptions(max_body_bytes=settings.server.max_body_bytes, test_faults=settings.server.test_faults)
    keys = KeyStore(settings.server.api_key_hashes)
    team = team_services(settings, registry, store, keys, metrics) if store is not None else None
    return create_app(service, keys, metrics, options, lifecycle, uploads, team, replica_name(settings.server))


def replica_name(server: ServerConfig) -> str:
    """[server] replica_id, else this host's name and the port: what X-Qwenhost-Replica says."""
    return server.replica_id or f"{socket.gethostname()}:{server.port}"


def configure_logging(server: ServerConfig) -> None:
    """log_level for qwenhost's logs (uvicorn's own stay at warning or above); access_log switches the
    JSON access lines (INFO on qwenhost.access) on or off whatever log_level says."""
    logging.getLogger().setLevel(server.log_level.upper())
    logging.getLogger("qwenhost.access").setLevel(logging.INFO if server.access_log else logging.CRITICAL + 1)


def serve(settings: Settings) -> None:
    import uvicorn

    from qwenhost.ops.server import GracefulServer

    configure_logging(settings.server)
    store = open_store(settings)
    check_exposure(settings, store)
    registry = load_models(settings)
    lifecycle = Lifecycle()
    app = build_app(settings, registry, lifecycle, store)
    host, port = settings.server.host, settings.server.port
    shown = f"[{host}]" if ":" in host else host
    for model in registry:
        aliases = ", ".join(model.config.aliases) or "none"
        log.info(
            "model %s (family %s, context %d, parallel %d, %s KV cache); aliases: %s",
            model.name,
            model.format.name,
            model.context_length,
            model.config.parallel,
            "split" if model.config.is_kv_split else "unified",
            aliases,
        )
    if store is not None:
        log.info("store: %s", store.url.render_as_string(hide_password=True))
    log.info("qwenhost listening on http://%s:%d/compatible-mode/v1 (also /v1)", shown, port)
    uvicorn_level = max(logging.WARNING, logging.getLevelName(settings.server.log_level.upper()))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=uvicorn_level,
        access_log=False,  # qwenhost.access writes one line per request instead
        timeout_graceful_shutdown=10,  # after the drain: time for the final frames to be written
    )
    backends = [m.backend for m in registry]
    server = GracefulServer(config, lambda hurry: drain(lifecycle, backends, settings.server.shutdown_grace_s, hurry))
    try:
        server.run()
    finally:
        for model in registry:
            model.backend.close()
        if store is not None:
            store.dispose()
