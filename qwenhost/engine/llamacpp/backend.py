"""The asyncio side of the embedded engine: admission, the watchdog, per-request queues, abort on close."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qwenhost.core.errors import ServeError, ServiceUnavailable
from qwenhost.core.types import SamplingParams
from qwenhost.engine.admission import Admission
from qwenhost.engine.llamacpp.commands import Delivery
from qwenhost.engine.llamacpp.decoder import DEFAULT_LOOP_GUARD, LoopGuard, Sampler
from qwenhost.engine.llamacpp.encoder import MediaFeed
from qwenhost.engine.llamacpp.executor import EngineExecutor
from qwenhost.engine.llamacpp.loop import EngineLoop
from qwenhost.engine.llamacpp.projector import Projector
from qwenhost.engine.llamacpp.runner import LlamaRunner, RunnerConfig
from qwenhost.engine.llamacpp.sampler import SequenceSampler
from qwenhost.engine.llamacpp.scheduler import Scheduler, SchedulerConfig
from qwenhost.engine.llamacpp.tokenizer import LlamaTokenizer
from qwenhost.engine.protocol import (
    EngineOutput,
    EnginePrompt,
    GenerationRequest,
    GrammarVocabulary,
    ModelInfo,
    PromptDone,
    PromptPiece,
    Reservation,
    StepOut,
)

log = logging.getLogger("qwenhost.engine")

Item = PromptDone | StepOut | ServeError  # as Delivery.item


@dataclass(frozen=True, slots=True)
class EngineConfig:
    runner: RunnerConfig
    scheduler: SchedulerConfig
    mmproj: str | None = None  # the multimodal projector GGUF (vision/audio encoder), loaded with mtmd
    max_image_tokens: int = 16384  # mtmd must never shrink an image we already sized (spec §4.11)
    # The watchdog: with work in flight and no step for this long, health() reports the stall and
    # reserve() refuses with 503 until steps resume. Longer than the slowest single llama_decode.
    watchdog_s: float = 60.0
    loop_guard: LoopGuard = DEFAULT_LOOP_GUARD  # when constrained output that repeats itself ends (decoder.py)


@dataclass(frozen=True, slots=True)
class _Waiter:
    """Where one request's deliveries go: its queue, on the event loop that awaits it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Item]


class LlamaCppBackend:
    """One loaded GGUF model served by one engine thread."""

    def __init__(self, config: EngineConfig) -> None:
        if config.watchdog_s <= 0:
            raise ValueError(f"watchdog_s must be positive, got {config.watchdog_s}")
        self.config = config
        self.admission = Admission(config.scheduler.num_slots, config.scheduler.max_waiting)
        self._runner: LlamaRunner | None = None
        self._loop: EngineLoop | None = None
        self._media: MediaFeed | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._projector: Projector | None = None
        self._info: ModelInfo | None = None
        self._tokenizer: LlamaTokenizer | None = None
        self._grammar_tokenizer: Any = None
        self._grammar_ready = threading.Event()

    @property
    def info(self) -> ModelInfo:
        assert self._info is not None, "backend not started"
        return self._info

    @property
    def tokenizer(self) -> LlamaTokenizer:
        assert self._tokenizer is not None, "backend not started"
        return self._tokenizer

    def start(self) -> None:
        """Load the model and start the engine thread (blocking; done before the server listens)."""
        runner = self._runner = LlamaRunner(self.config.runner)
        self._info = runner.info
        self._tokenizer = LlamaTokenizer(runner)
        if self.config.mmproj:
            rc = self.config.runner
            self._projector = Projector(
                self.config.mmproj,
                runner.model,
                n_threads=rc.n_threads_batch,
                use_gpu=rc.n_gpu_layers != 0,
                max_image_tokens=self.config.max_image_tokens,
            )
            self._info = replace(self._info, media=self._projector.capabilities)
            self._media = MediaFeed(self._projector, self._media_done)
        scheduler = Scheduler(self.config.scheduler, clock=time.monotonic)
        executor = EngineExecutor(runner, scheduler, self._make_sampler, self._media, self.config.loop_guard)
        self._loop = EngineLoop(executor, self._publish, is_encoder_alive=self._is_encoder_alive)
        if self._media is not None:
            self._media.encoder.start()
        self._loop.start()
        # The grammar vocabulary takes about a second; build it beside the server's start-up so the first
        # constrained request does not wait for it.
        threading.Thread(target=self._build_grammar_tokenizer, name="qwenhost-grammar-vocab", daemon=True).start()

    def _make_sampler(self, params: SamplingParams, prompt: Sequence[int]) -> Sampler:
        runner = self._runner
        assert runner is not None
        return SequenceSampler(runner.ctx, runner.n_vocab, params, prompt, runner.context_length)

    def _media_done(self, key: int, array: np.ndarray | None) -> None:
        loop = self._loop
        if loop is not None:
            loop.media_done(key, array)

    def _is_encoder_alive(self) -> bool:
        return self._media is not None and self._media.encoder.is_alive

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
        if self._media is not None:
            self._media.encoder.stop()
            self._media = None
        if self._projector is not None:
            self._projector.close()
            self._projector = None
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # -- admission and health ---------------------------------------------------------------------
    def reserve(self, num_seqs: int) -> Reservation:
        reason = self.health()
        if reason is not None:
            raise ServiceUnavailable(reason)
        return self.admission.reserve(num_seqs)

    def stop_admitting(self, error: ServeError) -> None:
        self.admission.refuse(error)

    def cancel_all(self, error: ServeError) -> None:
        if self._loop is not None:
            self._loop.cancel_all(error)

    def health(self) -> str | None:
        loop = self._loop
        if loop is None:
            return "The engine is not running."
        if not loop.is_alive:
            return "The engine thread has stopped; see the server log."
        stalled_s = loop.seconds_without_progress()
        if stalled_s > self.config.watchdog_s:
            n = self.admission.in_flight_requests
            requests = "1 request" if n == 1 else f"{n} requests"
            return f"The engine has made no progress for {stalled_s:.0f} s with {requests} in flight."
        return None

    # -- generation -------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest, reservation: Reservation) -> AsyncIterator[EngineOutput]:
        loop = self._loop
        if loop is None:
            reservation.release()
            raise ServiceUnavailable("The engine is not running.")
        # Deliveries go to the loop of the request that waits for them (captured per request, never cached).
        waiter = _Waiter(asyncio.get_running_loop(), asyncio.Queue())
        self._waiters[request.request_id] = waiter
        loop.submit(request)
        remaining = request.n
        try:
            while remaining > 0:
                item = await waiter.queue.get()
                if isinstance(item, ServeError):
                    raise item
                if isinstance(item, StepOut):
                    remaining -= sum(1 for t in item.tokens if t.finish is not None)
                yield item
        finally:
            self._waiters.pop(request.request_id, None)
            reservation.release()
            if remaining > 0:
                loop.abort(request.request_id)

    def _publish(self, deliveries: list[Delivery]) -> None:
        """On the engine thread: one hop onto each waiting event loop per step, not per token. Never
        raises: a delivery whose loop is closed is dropped (nobody can be waiting on a closed loop)."""
        batches: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Item], Item]]] = {}
        for delivery in deliveries:
            waiter = self._waiters.get(delivery.request_id)
            if waiter is not None:  # None: its consumer has left
                batches.setdefault(waiter.loop, []).append((waiter.queue, delivery.item))
        for aio, items in batches.items():
            try:
                aio.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # "Event loop is closed"
                log.warning("dropped %d engine deliveries: the event loop of their requests is closed", len(items))

    # -- metrics ----------------------------------------------------------------------------------
    def stats(self) -> Mapping[str, float]:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return {}
        sched = loop.executor.scheduler
        s = loop.executor.stats
        return {
            "running_sequences": sched.num_running,
            "waiting_requests": sched.num_waiting,
            "in_flight_requests": self.admission.in_flight_requests,
            "in_flight_sequences": self.admission.in_flight_sequences,
            "engine_steps": s.steps,
            "busy_seconds": s.step_s,  # wall time inside steps: its rate is the engine's duty cycle
            "decoded_tokens": s.decoded_tokens,
            "prompt_tokens": s.prompt_tokens,
            "cached_prompt_tokens": s.cached_tokens,
            "preemptions": s.preemptions,
            "faults": s.faults,
            "seconds_without_progress": loop.seconds_without_progress(),
            "pinned_prefixes": len(sched.pins),
            "pinned_prefix_bytes": runner.snapshot_bytes(),
            "kv_cells_capacity": runner.kv_tokens,
            "kv_tokens_held": sched.cache.tokens_held(),
            **self._media_stats(),
        }

    def _media_stats(self) -> dict[str, float]:
        if self._loop is None or self._media is None:
            return {}
        e = self._media.encoder.stats
        return {
            "media_chunks_encoded": e.chunks,
            "media_tokens_encoded": e.tokens,
            "media_encode_failures": e.failures,
            "media_encode_seconds": e.seconds,
            "media_tokens_decoded": self._loop.executor.stats.media_tokens,
        }


def _put_all(items: list[tuple[asyncio.Queue[Item], Item]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)
