"""The single chat pipeline: prepare(request) -> Job (every request-level error raised here, before any
byte is sent) and run(job) -> ChatEvents. Streaming and non-streaming both come from run()."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

from qwenhost.constrain.cache import MAX_COMPILED_GRAMMARS, GrammarCache
from qwenhost.core.events import ChatEvent, RoleStart, UsageReport
from qwenhost.core.types import CacheReport, ChatRequest, Usage
from qwenhost.engine.protocol import PromptDone, StepOut
from qwenhost.media.policy import MediaPolicy
from qwenhost.parsing.base import OutputParser
from qwenhost.service import structured
from qwenhost.service.job import Job
from qwenhost.service.media import DecodedPart, MediaPipeline
from qwenhost.service.models import ModelRegistry
from qwenhost.service.output import ChoicePipeline
from qwenhost.service.prepare import NO_AUDIO, Preparer
from qwenhost.service.speech_output import SpeechOutput
from qwenhost.service.tool_loop import ToolLoop
from qwenhost.service.tool_stream import ArgumentsAtOnce
from qwenhost.service.turn import turn_parser
from qwenhost.service.vocabulary import GRAMMAR_VOCABULARY_WAIT_S, VocabularyGate

__all__ = ["ChatService", "Job"]

# prepare() runs on a small pool of its own rather than asyncio.to_thread's shared default executor:
# rendering and schema work hold the GIL, so every extra busy thread takes turns from the event loop
# (each switch can cost it up to 5 ms), and a burst of prepares must not queue behind media decoding in
# the default pool (or the other way round). Requests beyond the pool wait their turn, unadmitted.
PREPARE_WORKERS = 4


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


class ChatService:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        request_timeout_s: float = 300.0,
        cache_isolation: bool = False,
        media: MediaPipeline | None = None,
        prepare_workers: int = PREPARE_WORKERS,
        grammar_cache_size: int = MAX_COMPILED_GRAMMARS,
        grammar_wait_s: float = GRAMMAR_VOCABULARY_WAIT_S,
        tool_loop: ToolLoop | None = None,
        speech: SpeechOutput | None = None,
        no_speech: str = NO_AUDIO,
    ) -> None:
        self.registry = registry
        self.speech = speech  # None: audio output is refused with ``no_speech``
        self.tool_loop = tool_loop or ToolLoop(())  # no features: enable_search & co. stay refused by the plan
        self.request_timeout_s = request_timeout_s
        self.media = media or MediaPipeline(MediaPolicy())
        self.grammars = GrammarCache(grammar_cache_size)
        self.preparer = Preparer(
            registry,
            self.media,
            grammars=self.grammars,
            vocabulary=VocabularyGate(grammar_wait_s),
            request_timeout_s=request_timeout_s,
            cache_isolation=cache_isolation,
            audio_refusal=None if speech is not None else no_speech,
        )
        self._pool = ThreadPoolExecutor(max_workers=prepare_workers, thread_name_prefix="qwenhost-prepare")

    def close(self, *, wait: bool = False) -> None:
        """Stop the prepare pool (work not started is dropped; ``wait``: until the running work is done)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    async def aclose(self) -> None:
        """At shutdown: the prepare pool, then the media fetcher and its decoder threads."""
        self.close()
        if self.speech is not None:
            self.speech.close()
        await self.media.close()

    # -- prepare ----------------------------------------------------------------------------------
    async def aprepare(
        self, request: ChatRequest, *, request_id: str, key_id: str | None = None, inject_fault: bool = False
    ) -> Job:
        """prepare() without blocking the event loop. Media is fetched and decoded only after every other
        check has passed and the engine's room is reserved; the room is given back if that fails."""
        # -- server-side tools (service/tool_loop.py): a forced search runs here, before the first byte
        session = await self.tool_loop.open(request, key_id)
        if session is not None:
            first = session.request_for(session.request.messages, offered=True)
            job = await self._aprepare(first, request_id, key_id, inject_fault)
            return dataclasses.replace(job, tools=session, notes=job.notes + session.notes)
        # --
        return await self._aprepare(request, request_id, key_id, inject_fault)

    async def _aprepare(self, request: ChatRequest, request_id: str, key_id: str | None, inject_fault: bool) -> Job:
        if not any(m.media for m in request.messages):
            return await self._off_loop(self.preparer.prepare_text, request, request_id, key_id, inject_fault)
        draft = await self._off_loop(self.preparer.draft_media, request, request_id, key_id, inject_fault)
        try:
            decoded = await self.media.decode(request, draft.model)
            return await self._off_loop(self.preparer.finish_media, draft, decoded)
        except BaseException:  # a failed fetch, a cancelled request: the room goes back at once
            draft.close()
            raise

    def prepare(
        self,
        request: ChatRequest,
        *,
        request_id: str,
        key_id: str | None = None,
        media: list[DecodedPart] | None = None,
        inject_fault: bool = False,
    ) -> Job:
        """prepare() on the calling thread; ``media``: the request's media parts, already decoded."""
        if media is None:
            return self.preparer.prepare_text(request, request_id, key_id, inject_fault)
        draft = self.preparer.draft_media(request, request_id, key_id, inject_fault)
        return self.preparer.finish_media(draft, media)

    async def _off_loop(self, fn: Callable[..., _C], *args: object) -> _C:
        future = self._pool.submit(fn, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # A worker that had already started still finishes, and may hold engine room: give it back.
            future.add_done_callback(_close_result)
            raise

    def make_parser(self, job: Job, choice: int) -> OutputParser:
        answer = structured.answer_parser(job.request, job.model, choice)
        return turn_parser(answer, job.model.format, job.thought, choice)

    # -- run --------------------------------------------------------------------------------------
    def run(self, job: Job) -> AsyncIterator[ChatEvent]:
        """The answer's events: one generation, or the server-side tool loop's rounds (service/tool_loop.py);
        spoken (service/speech_output.py) when the request asks for audio."""
        events = self._answer(job)
        audio = job.request.audio_output
        if audio is None:
            return events
        assert self.speech is not None, "prepare() refuses audio output without a speech engine"
        return self.speech.speak(audio, events)

    def _answer(self, job: Job) -> AsyncIterator[ChatEvent]:
        if job.tools is None:
            return self._generate(job)

        async def prepare(request: ChatRequest, request_id: str, key_id: str | None) -> Job:
            return await self._aprepare(request, request_id, key_id, False)

        return self.tool_loop.run(job, job.tools, self._generate, prepare)

    async def _generate(self, job: Job) -> AsyncGenerator[ChatEvent, None]:
        """Generate; the first event arrives only after the prompt is processed, so queueing errors
        (503 after the queue timeout) can still be answered with an HTTP status."""
        pipelines = [
            ChoicePipeline(i, self.make_parser(job, i), job.stop_strings, logprobs=job.request.logprobs)
            for i in range(job.request.n)
        ]
        cache = CacheReport()
        hold = ArgumentsAtOnce() if job.request.stream and not job.request.tool_stream else None
        stream = job.model.backend.generate(job.generation, job.reservation)
        try:
            while not all(p.is_done for p in pipelines):
                try:
                    out = await self._next(stream, job.deadline_s)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    for p in pipelines:
                        for event in _held(hold, p.truncate()):
                            yield event
                    break
                if isinstance(out, PromptDone):
                    cache = out.cache
                    for p in pipelines:
                        yield RoleStart(p.choice, is_thinking=job.is_thinking)
                elif isinstance(out, StepOut):
                    for token in out.tokens:
                        for event in _held(hold, pipelines[token.choice].feed(token)):
                            yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        for event in hold.flush() if hold is not None else ():
            yield event
        usage = Usage(
            prompt_tokens=len(job.prompt.tokens),
            completion_tokens=sum(p.completion_tokens for p in pipelines),
            cache=cache,
            reasoning_tokens=sum(p.reasoning_tokens for p in pipelines) if job.is_thinking else None,
            **_modal_usage(len(job.prompt.tokens), dict(job.modal_tokens)),
        )
        yield UsageReport(usage)

    @staticmethod
    async def _next(stream: AsyncIterator[object], deadline_s: float | None) -> object:
        if deadline_s is None:
            return await anext(stream)
        remaining = deadline_s - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return await asyncio.wait_for(anext(stream), remaining)


def _held(hold: ArgumentsAtOnce | None, events: Iterable[ChatEvent]) -> Iterable[ChatEvent]:
    return hold.feed(events) if hold is not None else events


def _close_result(future: Future[_C]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _modal_usage(prompt_tokens: int, modal: dict[str, int]) -> dict[str, int]:
    """prompt_tokens_details per modality (spec §2.2); text_tokens is the rest of the prompt."""
    if not modal:
        return {}
    out = {f"{kind}_tokens": n for kind, n in modal.items()}
    out["text_tokens"] = prompt_tokens - sum(modal.values())
    return out
