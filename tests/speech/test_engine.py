"""speech/engine.py with the real eSpeak NG of the espeakng-loader wheel: deterministic, one distinct local
voice per DashScope voice, Mandarin read from the text, and the engine's failures as SpeechError."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from qwenhost.speech.engine import EspeakEngine, SpeechError
from qwenhost.speech.voices import VOICES, detect_language


@pytest.fixture(scope="module")
def engine() -> Iterator[EspeakEngine]:
    e = EspeakEngine()
    yield e
    e.close()


def test_same_input_same_samples(engine: EspeakEngine) -> None:
    text = "The same sentence, twice."
    first = engine.synthesize(text, "Cherry")
    engine.synthesize("Something else in between.", "Ethan")
    assert engine.synthesize(text, "Cherry") == first  # eSpeak's state does not leak between sentences
    assert len(first) % 2 == 0 and np.abs(np.frombuffer(first, dtype="<i2")).max() > 1000


def test_every_voice_is_its_own(engine: EspeakEngine) -> None:
    assert len({engine.synthesize("Good morning.", v) for v in VOICES}) == len(VOICES)


def test_language_comes_from_the_text_and_can_be_set(engine: EspeakEngine) -> None:
    assert detect_language("你好，世界") == "cmn" and detect_language("Hello 世界 and friends") == "en-us"
    text = "你好，我是通义千问。"
    assert engine.synthesize(text, "Serena") == engine.synthesize(text, "Serena", "cmn")
    assert engine.synthesize(text, "Serena") != engine.synthesize(text, "Serena", "en-us")


def test_failures_are_speech_errors_and_the_worker_comes_back(engine: EspeakEngine) -> None:
    with pytest.raises(SpeechError, match="no voice"):
        engine.synthesize("hello", "Cherry", "xx-nowhere")
    assert engine.synthesize("Still here.", "Cherry")
