"""speech/pcm.py: chunks are whole 6-byte groups, so concatenated base64 decodes to the same audio."""

from __future__ import annotations

import base64

import numpy as np

from qwenhost.speech.pcm import CHUNK_BYTES, SAMPLE_RATE, Chunker, resample


def test_chunks_are_multiples_of_six_and_decode_the_same_both_ways() -> None:
    chunker = Chunker()
    pieces = [bytes(range(256)) * 37 + b"\x01", b"\x02" * 4801, b"\x03" * 7]  # odd lengths on purpose
    chunks = [c for p in pieces for c in chunker.feed(p)] + chunker.finish()
    assert all(len(c) % 6 == 0 and 0 < len(c) <= CHUNK_BYTES for c in chunks)
    joined = b"".join(chunks)
    assert joined[: sum(map(len, pieces))] == b"".join(pieces) and set(joined[sum(map(len, pieces)) :]) <= {0}
    concatenated = base64.b64decode("".join(base64.b64encode(c).decode() for c in chunks))
    assert concatenated == joined  # the official sample's "concatenate, then decode once" style


def test_resample_keeps_duration_and_pitch() -> None:
    rate = 22_050
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 10_000).astype("<i2").tobytes()
    out = np.frombuffer(resample(tone, rate), dtype="<i2").astype(np.float64)
    assert len(out) == SAMPLE_RATE  # one second stays one second
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # the bin width is 1 Hz for one second of audio
