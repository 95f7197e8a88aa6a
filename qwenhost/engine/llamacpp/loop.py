"""The engine thread: drain typed commands -> step -> publish, with a heartbeat for the watchdog.

Each command and each step runs inside the executor's fault boundaries, publishing inside its own, so
the thread outlives any failure; if it ever dies, or stops making progress while it has work, the
backend's health() says so (see the watchdog in backend.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from qwenhost.core.errors import InternalError, ServeError, ServiceUnavailable
from qwenhost.engine.llamacpp.commands import Abort, CancelAll, Command, Delivery, MediaDone, Publish, Stop, Submit
from qwenhost.engine.llamacpp.executor import EngineExecutor
from qwenhost.engine.protocol import GenerationRequest

log = logging.getLogger("qwenhost.engine")

SHUTDOWN_MESSAGE = "The server is shutting down."
_MEDIA_WAIT_S = 0.05  # every runnable sequence waits for the media encoder: poll the inbox this often


class EngineLoop:
    def __init__(
        self,
        executor: EngineExecutor,
        publish: Publish,
        clock: Callable[[], float] = time.monotonic,
        is_encoder_alive: Callable[[], bool] = lambda: False,
    ) -> None:
        self.executor = executor
        self.publish = publish
        self.clock = clock
        self._is_encoder_alive = is_encoder_alive
        self._commands: deque[Command] = deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._closed: ServeError | None = None  # set once the thread has left: later submits fail at once
        self._progress_s = clock()  # when the loop last made progress (or had nothing to do)
        self._thread = threading.Thread(target=self._run, name="qwenhost-engine", daemon=True)

    # -- called from other threads ----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        self._command(Submit(request))

    def abort(self, request_id: str) -> None:
        self._command(Abort(request_id))

    def cancel_all(self, error: ServeError) -> None:
        self._command(CancelAll(error))

    def media_done(self, key: int, array: np.ndarray | None) -> None:
        self._command(MediaDone(key, array))  # from the encoder thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self._command(Stop())
        self._thread.join(timeout=timeout_s)

    def _command(self, command: Command) -> None:
        with self._wake:
            closed = self._closed
            if closed is None:
                self._commands.append(command)
                self._wake.notify()
        if closed is not None and isinstance(command, Submit):  # nobody would ever answer it
            self.publish([Delivery(command.request.request_id, closed)])

    # -- watched from other threads ---------------------------------------------------------------
    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def seconds_without_progress(self) -> float:
        """How long the loop has had work and made no step (0 while idle or progressing)."""
        if not (self._commands or self.executor.has_work()):
            return 0.0
        return max(0.0, self.clock() - self._progress_s)

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        final: ServeError = ServiceUnavailable(SHUTDOWN_MESSAGE)
        try:
            while not self._stopped:
                self._iterate()
        except BaseException:  # never expected: every command and step has its own boundary
            log.critical("the engine thread died; its requests fail and /health reports it", exc_info=True)
            final = InternalError()
        finally:
            self._finish(final)

    def _iterate(self) -> None:
        with self._wake:
            while not self._commands and not self.executor.has_work():
                self._wake.wait(timeout=1.0)
                self._beat()  # idle is not stalled: the watchdog counts from when work arrived
        self._drain()
        if self._stopped:
            return
        if not self.executor.has_work():
            self._beat()
            return
        try:
            progressed = self.executor.step()
        except Exception:  # schedule() itself failed: nothing tells which requests, so all of them pay
            log.exception("engine step could not be planned")
            self.executor.fail_all(InternalError())
            progressed = True
        self._flush()
        if progressed or self._is_encoder_alive():  # waiting for a working encoder is not a stall
            self._beat()
        if not progressed:
            with self._wake:
                if not self._commands:
                    self._wake.wait(timeout=_MEDIA_WAIT_S)

    def _drain(self) -> None:
        while self._commands:  # only this thread pops: no lock needed (deque operations are atomic)
            command = self._commands.popleft()
            if isinstance(command, Stop):
                self._stopped = True
                break
            self.executor.handle(command)
        self._flush()

    def _flush(self) -> None:
        deliveries = self.executor.take_outbox()
        if not deliveries:
            return
        try:
            self.publish(deliveries)
        except Exception:  # the bridge must not raise; if it does, the thread still lives
            log.exception("publishing %d engine deliveries failed", len(deliveries))

    def _beat(self) -> None:
        self._progress_s = self.clock()

    def _finish(self, error: ServeError) -> None:
        """Leaving: every request still in flight (or still in the inbox) gets ``error``."""
        with self._wake:
            self._closed = error
            left, self._commands = list(self._commands), deque()
        try:
            for command in left:
                if isinstance(command, Submit):
                    self.executor.fail_request(command.request.request_id, error)
            self.executor.fail_all(error)
            self._flush()
        except Exception:
            log.exception("failing the requests left in the engine failed")
