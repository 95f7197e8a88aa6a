"""GracefulServer: uvicorn with a drain on SIGTERM/SIGINT, and exit status 0 when the drain answered it.

uvicorn alone stops listening at once, waits ``timeout_graceful_shutdown`` and then cancels the request
tasks (streams end without a final event), and it re-raises the signal after shutting down, so the process
dies by SIGTERM instead of exiting 0. Here the first signal starts ``drain`` while the listener stays open
(late requests get a 503 envelope, /health answers 503); uvicorn's own shutdown starts when the drain ends.
A second signal cuts the grace period short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType

import uvicorn

log = logging.getLogger("qwenhost")

Drain = Callable[[asyncio.Event], Awaitable[None]]
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self._drain = drain
        self._aio: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._aio = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, without raising the captured signal again afterwards: the drain has answered it."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the loop's thread: hand the work to the loop.
        if self._aio is None or self._aio.is_closed():
            self.should_exit = True
            return
        self._aio.call_soon_threadsafe(self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self._drain_task is not None:
            log.warning("%s again: cancelling the requests in flight now", signal.Signals(sig).name)
            self._hurry.set()
            return
        log.info("%s: draining before shutdown", signal.Signals(sig).name)
        self._drain_task = asyncio.ensure_future(self._run_drain())

    async def _run_drain(self) -> None:
        try:
            await self._drain(self._hurry)
        except Exception:
            log.exception("the drain failed; shutting down")
        finally:
            self.should_exit = True
