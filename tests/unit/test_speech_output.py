"""service/speech_output.py with a scripted synthesizer: sentences go out as they complete, audio in order and
before the finish, usage counts the audio, at most max_pending sentences wait, and a failure ends the stream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from qwenhost.core.errors import InternalError
from qwenhost.core.events import AudioDelta, ChatEvent, ContentDelta, Finish, RoleStart, UsageReport
from qwenhost.core.types import AudioOutput, Usage
from qwenhost.service.speech_output import SpeechOutput
from qwenhost.speech.engine import SpeechError


class Scripted:
    """PCM of 6 bytes per character; records the sentences; ``gate`` holds synthesis until set."""

    name = "scripted"

    def __init__(self) -> None:
        self.spoken: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def synthesize(self, text: str, voice: str, language: str | None = None) -> bytes:
        self.gate.wait(10)
        if self.fail:
            raise SpeechError("boom")
        self.spoken.append(text)
        return bytes([len(self.spoken)]) * 6 * len(text)

    def close(self) -> None:
        pass


async def answer(*texts: str) -> AsyncIterator[ChatEvent]:
    yield RoleStart(0)
    for text in texts:
        yield ContentDelta(0, text)
    yield Finish(0, "stop")
    yield UsageReport(Usage(prompt_tokens=5, completion_tokens=len(texts)))


def run(speaker: SpeechOutput, events: AsyncIterator[ChatEvent]) -> list[ChatEvent]:
    async def collect() -> list[ChatEvent]:
        return [e async for e in speaker.speak(AudioOutput("Cherry"), events)]

    return asyncio.run(collect())


def test_audio_follows_each_sentence_and_precedes_the_finish() -> None:
    engine = Scripted()
    events = run(SpeechOutput(engine), answer("Hi there. ", "How are", " you?"))
    assert engine.spoken == ["Hi there.", "How are you?"]
    kinds = [type(e).__name__ for e in events]
    assert kinds[-2:] == ["Finish", "UsageReport"] and "AudioDelta" in kinds
    audio = b"".join(e.data for e in events if isinstance(e, AudioDelta))
    assert audio == b"\x01" * 54 + b"\x02" * 72  # in order, nothing lost, whole groups
    usage = events[-1]
    assert isinstance(usage, UsageReport) and usage.usage.output_audio_tokens == 1  # 126 bytes: ceil(0.07)
    assert usage.usage.completion_tokens == 3 + 1


def test_no_more_than_max_pending_sentences_wait() -> None:
    engine = Scripted()
    speaker = SpeechOutput(engine, max_pending=2)
    engine.gate.clear()
    seen: list[int] = []

    async def produce() -> AsyncIterator[ChatEvent]:
        for i in range(6):
            seen.append(i)
            yield ContentDelta(0, f"S{i}. ")
        yield Finish(0, "stop")

    async def main() -> None:
        stream = speaker.speak(AudioOutput("Ethan"), produce())
        reader = asyncio.ensure_future(_drain(stream))
        await asyncio.sleep(0.3)
        assert len(seen) <= 2  # max_pending sentences wait at most: then reading the answer waits too
        engine.gate.set()
        await reader

    asyncio.run(main())
    assert len(engine.spoken) == 6


async def _drain(stream: AsyncIterator[ChatEvent]) -> None:
    async for _ in stream:
        pass


def test_a_failed_synthesis_ends_the_stream_with_an_error() -> None:
    engine = Scripted()
    engine.fail = True
    with pytest.raises(InternalError, match="Speech synthesis failed: boom"):
        run(SpeechOutput(engine), answer("One sentence."))
