"""Spoken answers (``modalities: ["text", "audio"]``, spec §4.10): the streamed content, cut into sentences,
is synthesized on one worker thread while generation goes on; the audio follows as AudioDelta events.

The engine (qwenhost/speech/) runs out of process; the worker thread only waits on its pipe, so neither
the decode threads nor the event loop run synthesis. Each request keeps at most ``max_pending`` sentences in
flight: past that, reading the answer waits for the oldest one (bounded work, bounded memory). Only content
that the client sees is spoken: reasoning, tool calls and a server-side tool loop's hidden rounds are not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor

from qwenhost.core.errors import InternalError
from qwenhost.core.events import AudioDelta, ChatEvent, ContentDelta, Finish, UsageReport
from qwenhost.core.types import AudioOutput, Usage
from qwenhost.speech.engine import SpeechError, Synthesizer
from qwenhost.speech.pcm import SAMPLE_BYTES, SAMPLE_RATE, Chunker
from qwenhost.speech.sentences import SentenceSplitter

log = logging.getLogger("qwenhost.speech")

# usage.completion_tokens_details.audio_tokens: DashScope documents no rate for spoken output, so qwenhost
# counts 25 tokens per second of audio (rounded up), the rate Model Studio documents for Omni's audio input.
AUDIO_TOKENS_PER_S = 25
MAX_PENDING_SENTENCES = 8


def audio_tokens(num_bytes: int) -> int:
    return math.ceil(num_bytes / SAMPLE_BYTES / SAMPLE_RATE * AUDIO_TOKENS_PER_S)


class SpeechOutput:
    """The server's speaker: one engine, one worker thread for every request's sentences."""

    def __init__(self, engine: Synthesizer, *, max_pending: int = MAX_PENDING_SENTENCES) -> None:
        self.engine = engine
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwenhost-speech")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

    def speak(self, audio: AudioOutput, events: AsyncIterator[ChatEvent]) -> AsyncGenerator[ChatEvent, None]:
        return _Speaking(self, audio).run(events)

    def submit(self, text: str, voice: str) -> Future[bytes]:
        return self._pool.submit(self.engine.synthesize, text, voice)


class _Speaking:
    """One request's spoken answer (choice 0: audio output takes n = 1)."""

    def __init__(self, speaker: SpeechOutput, audio: AudioOutput) -> None:
        self.speaker = speaker
        self.voice = audio.voice
        self.splitter = SentenceSplitter()
        self.chunker = Chunker()
        self.pending: deque[Future[bytes]] = deque()
        self.num_bytes = 0

    async def run(self, events: AsyncIterator[ChatEvent]) -> AsyncGenerator[ChatEvent, None]:
        held: list[ChatEvent] = []  # the Finish and the usage wait for the last audio (spec §2.4's order)
        try:
            async for event in events:
                if isinstance(event, Finish | UsageReport):
                    held.append(event)
                    continue
                yield event
                if isinstance(event, ContentDelta) and event.choice == 0:
                    self._queue(self.splitter.feed(event.text))
                async for audio in self._ready(wait=len(self.pending) >= self.speaker.max_pending):
                    yield audio
            self._queue(self.splitter.finish())
            async for audio in self._ready(wait=True, drain=True):
                yield audio
            for piece in self.chunker.finish():
                self.num_bytes += len(piece)
                yield AudioDelta(0, piece)
            for event in held:
                yield self._with_audio(event)
        finally:
            for future in self.pending:
                future.cancel()  # a sentence not started yet is dropped; a running one finishes unread
            await events.aclose()  # type: ignore[attr-defined]  # the generation (and its engine work) ends too

    def _queue(self, sentences: list[str]) -> None:
        self.pending.extend(self.speaker.submit(s, self.voice) for s in sentences)

    async def _ready(self, *, wait: bool, drain: bool = False) -> AsyncGenerator[AudioDelta, None]:
        """Audio of the finished sentences, in order; ``wait``: for the oldest (``drain``: for all)."""
        while self.pending and (wait or self.pending[0].done()):
            try:
                pcm = await asyncio.wrap_future(self.pending[0])
            except SpeechError as exc:
                log.error("speech synthesis failed: %s", exc)
                raise InternalError(f"Speech synthesis failed: {exc}") from None
            self.pending.popleft()
            for piece in self.chunker.feed(pcm):
                self.num_bytes += len(piece)
                yield AudioDelta(0, piece)
            wait = drain

    def _with_audio(self, event: ChatEvent) -> ChatEvent:
        if not isinstance(event, UsageReport):
            return event
        usage: Usage = event.usage
        tokens = audio_tokens(self.num_bytes)
        spoken = dataclasses.replace(
            usage, completion_tokens=usage.completion_tokens + tokens, output_audio_tokens=tokens
        )
        return UsageReport(spoken)
