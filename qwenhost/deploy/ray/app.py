"""The Ray Serve application: one HTTP ingress deployment in front of N engine replicas of one model.

Each engine replica is a whole qwenhost worker (main.build_app: both dialects, auth, limits, errors) that
answers ForwardedRequests in process; the ingress (ingress.py) only reads the body, names its prefix and
relays. The service layer stays with the model because it needs the model's tokenizer, template and
grammar vocabulary; the ingress needs nothing of the model and holds no engine (num_cpus 0).

    serve run qwenhost.deploy.ray.app:app_builder replicas=2 threads=1 [config=qwenhost.toml] [router=default]
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any, cast

import ray.exceptions
from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.types import ASGIApp

from qwenhost.config import ConfigError, Settings, load_settings
from qwenhost.deploy.ray.forward import ForwardedRequest, ResponseStart, answer
from qwenhost.deploy.ray.ingress import Ingress, IngressConfig
from qwenhost.deploy.ray.policy import PolicyConfig
from qwenhost.main import build_app, load_models, open_store
from qwenhost.ops.lifecycle import Lifecycle

ROUTER_CLASS = "qwenhost.deploy.ray.router:PrefixAffinityRouter"  # imported by each handle's process
ROUTERS = ("prefix", "default")  # default: Ray's PowerOfTwoChoices (for comparison; no affinity)
# A replica whose actor died or cannot be reached: the request never started there, so another may take it.
RETRYABLE: tuple[type[BaseException], ...] = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class EngineReplica:
    """One qwenhost worker in a Ray actor; ``X-Qwenhost-Replica`` says its Serve replica id."""

    def __init__(self, settings: Settings) -> None:
        replica_id = serve.get_replica_context().replica_id.unique_id
        settings = replace(settings, server=replace(settings.server, replica_id=replica_id))
        self.registry = load_models(settings)
        self.store = open_store(settings)
        self.app = build_app(settings, self.registry, Lifecycle(), self.store)

    async def forward(self, request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        async for item in answer(self.app, request):
            yield item

    def check_health(self) -> None:
        """Serve's liveness probe: a stalled or stopped engine gets the replica replaced."""
        reasons = [f"{m.name}: {r}" for m in self.registry if (r := m.backend.health()) is not None]
        if reasons:
            raise RuntimeError("; ".join(reasons))

    def __del__(self) -> None:
        for model in getattr(self, "registry", ()):
            model.backend.close()
        store = getattr(self, "store", None)
        if store is not None:
            store.dispose()


class HttpIngress:
    def __init__(self, engine: DeploymentHandle[Any], config: IngressConfig) -> None:
        self.engine = engine.options(stream=True)
        self.config = config

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return Ingress(self._call, RETRYABLE, self.config)

    async def _call(self, request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        response = cast(DeploymentResponseGenerator[Any], self.engine.forward.remote(request))
        finished = False
        try:
            async for item in response:
                yield item
            finished = True
        finally:
            if not finished:  # the client left or the relay failed: stop the replica's work too
                response.cancel()  # type: ignore[no-untyped-call]


def build(settings: Settings, replicas: int, router: str = "prefix", policy: PolicyConfig | None = None) -> Application:
    """The application for ``serve.run``: ``replicas`` engine replicas of the one configured model, each
    with ``num_cpus`` = its llama.cpp threads."""
    if len(settings.models) != 1:
        raise ConfigError(f"the Ray application serves one model per app; the config has {len(settings.models)}")
    if replicas < 1 or router not in ROUTERS:
        raise ConfigError(f"replicas must be at least 1 and router one of {', '.join(ROUTERS)}")
    model = settings.models[0]
    threads = model.threads or max(1, (os.cpu_count() or 1) // replicas)
    settings = replace(settings, models=(replace(model, threads=threads),))
    router_config = RequestRouterConfig()
    if router == "prefix":
        fields = _fields(policy or PolicyConfig())
        # Ray types the field as its serialised form (dict); it accepts an import path.
        router_config = RequestRouterConfig(request_router_class=ROUTER_CLASS, request_router_kwargs=fields)  # type: ignore[arg-type]
    engine = serve.deployment(
        name="EngineReplica",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": threads},
        max_ongoing_requests=model.parallel + model.max_waiting,
        graceful_shutdown_timeout_s=settings.server.shutdown_grace_s,
        request_router_config=router_config,
    )(EngineReplica).bind(settings)
    ingress_config = IngressConfig(max_body_bytes=settings.server.max_body_bytes)
    ingress_class = serve.ingress()(HttpIngress)
    ingress = serve.deployment(name="HttpIngress", ray_actor_options={"num_cpus": 0})(ingress_class)
    return ingress.bind(engine, ingress_config)


def _fields(policy: PolicyConfig) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in policy.__dataclass_fields__}


def app_builder(args: Mapping[str, str]) -> Application:
    """For ``serve run qwenhost.deploy.ray.app:app_builder key=value …``: config, replicas, threads, router."""
    known = {"config", "replicas", "threads", "router"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(f"unknown argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    threads = int(args["threads"]) if "threads" in args else None
    settings = load_settings(args.get("config"), threads=threads)
    return build(settings, int(args.get("replicas", "2")), args.get("router", "prefix"))
