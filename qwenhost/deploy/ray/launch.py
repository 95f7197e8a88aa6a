"""``qwenhost serve --ray``: join (or start) a Ray cluster, deploy the application, serve until interrupted."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import ray
from ray import serve

from qwenhost.config import Settings
from qwenhost.deploy.ray.app import build
from qwenhost.main import check_exposure, configure_logging, open_store

log = logging.getLogger("qwenhost")
APP_NAME = "qwenhost"


def serve_on_ray(settings: Settings, replicas: int, address: str | None, router: str = "prefix") -> None:
    """``address`` None starts a one-node Ray here; "auto" or ray://… joins a cluster started with
    ``ray start --head`` (docs/scale-out.md). Serve's HTTP proxy listens on [server] host and port."""
    configure_logging(settings.server)
    store = open_store(settings)
    try:
        check_exposure(settings, store)  # the proxy is the listening socket: same rule as `qwenhost serve`
    finally:
        if store is not None:
            store.dispose()
    application = build(settings, replicas, router)  # refuses a bad config before Ray starts
    ray.init(address=address, include_dashboard=False, log_to_driver=True)
    serve.start(http_options={"host": settings.server.host, "port": settings.server.port})
    serve.run(application, name=APP_NAME, route_prefix="/")
    log.info(
        "qwenhost on Ray Serve: %d replica(s), %s router, http://%s:%d/compatible-mode/v1",
        replicas,
        router,
        settings.server.host,
        settings.server.port,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        threading.Event().wait()  # until Ctrl-C / SIGTERM (Serve keeps running in the cluster's processes)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)  # replicas drain: graceful_shutdown_timeout_s = [server] shutdown_grace_s
        ray.shutdown()


def _interrupt(sig: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the wait like Ctrl-C: the app is deleted, replicas drain
