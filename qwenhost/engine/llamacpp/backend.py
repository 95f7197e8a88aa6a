"""The asyncio side of the embedded engine: admission, per-request queues, and abort on close."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qwenhost.core.errors import ServeError
from qwenhost.engine.admission import Admission
from qwenhost.engine.llamacpp.loop import Delivery, EngineLoop
from qwenhost.engine.llamacpp.projector import Projector
from qwenhost.engine.llamacpp.runner import LlamaRunner, RunnerConfig
from qwenhost.engine.llamacpp.scheduler import Scheduler, SchedulerConfig
from qwenhost.engine.protocol import (
    EngineOutput,
    EnginePrompt,
    GenerationRequest,
    GrammarVocabulary,
    ModelInfo,
    PromptPiece,
    Reservation,
    StepOut,
    Tokenizer,
)

log = logging.getLogger("qwenhost.engine")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    runner: RunnerConfig
    scheduler: SchedulerConfig
    mmproj: str | None = None  # the multimodal projector GGUF (vision/audio encoder), loaded with mtmd
    max_image_tokens: int = 16384  # mtmd must never shrink an image we already sized (spec §4.11)
    watchdog_s: float = 60.0  # no step for this long while there is work: health() says why (config watchdog_s)


class LlamaCppBackend:
    """One loaded GGUF model served by one engine thread."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._runner: LlamaRunner | None = None
        self._loop: EngineLoop | None = None
        self._queues: dict[str, asyncio.Queue[object]] = {}
        self._aio: asyncio.AbstractEventLoop | None = None
        self.admission = Admission(config.scheduler.num_slots, config.scheduler.max_waiting)
        self._projector: Projector | None = None
        self._info: ModelInfo | None = None
        self._grammar_tokenizer: Any = None
        self._grammar_ready = threading.Event()

    @property
    def info(self) -> ModelInfo:
        assert self._info is not None, "backend not started"
        return self._info

    def start(self) -> None:
        """Load the model and start the engine thread (blocking; done before the server listens)."""
        self._runner = LlamaRunner(self.config.runner)
        self._info = self._runner.info
        if self.config.mmproj:
            rc = self.config.runner
            self._projector = Projector(
                self.config.mmproj,
                self._runner.model,
                n_threads=rc.n_threads_batch,
                use_gpu=rc.n_gpu_layers != 0,
                max_image_tokens=self.config.max_image_tokens,
            )
            self._info = replace(self._info, media=self._projector.capabilities)
        scheduler = Scheduler(self.config.scheduler, clock=time.monotonic)
        self._loop = EngineLoop(self._runner, scheduler, self._publish, self._projector)
        self._loop.start()
        # The grammar vocabulary takes about a second; build it beside the server's start-up so the first
        # constrained request does not wait for it.
        threading.Thread(target=self._build_grammar_tokenizer, name="qwenhost-grammar-vocab", daemon=True).start()

    def _build_grammar_tokenizer(self) -> None:
        try:
            assert self._runner is not None
            self._grammar_tokenizer = self._runner.grammar_tokenizer()
        except Exception:
            log.exception("could not build the grammar vocabulary; constrained decoding is unavailable")
        finally:
            self._grammar_ready.set()

    def grammar_vocabulary(self) -> GrammarVocabulary | None:
        self._grammar_ready.wait()
        return self._grammar_tokenizer  # type: ignore[no-any-return]

    @property
    def tokenizer(self) -> Tokenizer:
        return self

    def build_prompt(self, pieces: Sequence[PromptPiece]) -> EnginePrompt:
        if self._projector is None:
            raise RuntimeError("this model has no multimodal projector")
        return self._projector.layout(pieces)

    def close(self) -> None:
        if self._runner is not None:
            self._grammar_ready.wait(timeout=60)  # it reads the vocabulary that close() frees
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if self._projector is not None:
            self._projector.close()
            self._projector = None
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # -- admission --------------------------------------------------------------------------------
    def reserve(self, num_seqs: int) -> Reservation:
        return self.admission.reserve(num_seqs)

    def stop_admitting(self, error: ServeError) -> None:
        self.admission.refuse(error)

    def cancel_all(self, error: ServeError) -> None:
        if self._loop is not None:
            self._loop.cancel_all(error)

    def health(self) -> str | None:
        return None if self._loop is not None else "the engine is not running"

    # -- generation -------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest, reservation: Reservation) -> AsyncIterator[EngineOutput]:
        assert self._loop is not None, "backend not started"
        if self._aio is None:
            self._aio = asyncio.get_running_loop()  # the server's loop: engine results are delivered there
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues[request.request_id] = queue
        self._loop.submit(request, request.cache_salt)
        remaining = request.n
        try:
            while remaining > 0:
                item = await queue.get()
                if isinstance(item, ServeError):
                    raise item
                if isinstance(item, StepOut):
                    remaining -= sum(1 for t in item.tokens if t.finish is not None)
                yield item  # type: ignore[misc]
        finally:
            self._queues.pop(request.request_id, None)
            reservation.release()
            if remaining > 0:
                self._loop.abort(request.request_id)

    def _publish(self, deliveries: list[Delivery]) -> None:
        # Called on the engine thread: one hop onto the event loop per step, not per token.
        if self._aio is not None:
            self._aio.call_soon_threadsafe(self._dispatch, deliveries)

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        for request_id, item in deliveries:
            queue = self._queues.get(request_id)
            if queue is not None:
                queue.put_nowait(item)

    # -- vocabulary -------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        assert self._runner is not None
        return self._runner.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: list[int]) -> bytes:
        assert self._runner is not None
        pieces = self._runner.pieces
        return b"".join(pieces[t] for t in tokens if 0 <= t < len(pieces))

    def stats(self) -> Mapping[str, float]:
        if self._loop is None:
            return {}
        sched = self._loop.scheduler
        s = self._loop.stats
        return {
            "running_sequences": sched.num_running,
            "waiting_requests": sched.num_waiting,
            "in_flight_requests": self.admission.in_flight_requests,
            "in_flight_sequences": self.admission.in_flight_sequences,
            "engine_steps": s.steps,
            "decoded_tokens": s.decoded_tokens,
            "prompt_tokens": s.prompt_tokens,
            "cached_prompt_tokens": s.cached_tokens,
            "preemptions": s.preemptions,
            "pinned_prefixes": len(sched.pins),
            "kv_cells_capacity": self._loop.runner.kv_tokens,
            "kv_tokens_held": sched.tokens_held(),
            **self._media_stats(),
        }

    def _media_stats(self) -> dict[str, float]:
        if self._loop is None or self._loop.encoder is None:
            return {}
        e = self._loop.encoder.stats
        return {
            "media_chunks_encoded": e.chunks,
            "media_tokens_encoded": e.tokens,
            "media_encode_failures": e.failures,
            "media_encode_seconds": e.seconds,
            "media_tokens_decoded": self._loop.stats.media_tokens,
        }
