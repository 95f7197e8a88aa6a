"""PCM16 handling: resampling to the 24 kHz Omni streams, and cutting audio into whole-group chunks."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 24_000  # Qwen-Omni's stream: raw PCM16 mono little-endian at 24 kHz (spec §4.10)
SAMPLE_BYTES = 2
# A chunk's byte length is a multiple of 6: whole 16-bit samples and whole base64 groups, so that a client
# that concatenates the base64 fragments and decodes once gets the audio intact (research §3.1).
GROUP_BYTES = 6
CHUNK_BYTES = 4_800  # 0.1 s of audio per chunk


def resample(pcm: bytes, rate: int) -> bytes:
    """PCM16 mono at ``rate`` -> PCM16 mono at 24 kHz (linear interpolation: numpy only, deterministic)."""
    if rate == SAMPLE_RATE or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n_out = round(len(samples) * SAMPLE_RATE / rate)
    positions = np.arange(n_out, dtype=np.float64) * (rate / SAMPLE_RATE)
    out = np.interp(positions, np.arange(len(samples), dtype=np.float64), samples)
    return bytes(np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes())


def duration_s(pcm: bytes) -> float:
    return len(pcm) / SAMPLE_BYTES / SAMPLE_RATE


class Chunker:
    """Cuts a stream of PCM pieces into chunks of at most CHUNK_BYTES, each a multiple of GROUP_BYTES; a
    remainder waits for the next piece, and the very last one is padded with silence to a whole group."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        assert chunk_bytes % GROUP_BYTES == 0
        self._chunk_bytes = chunk_bytes
        self._held = b""

    def feed(self, pcm: bytes) -> list[bytes]:
        data = self._held + pcm
        whole = len(data) - len(data) % GROUP_BYTES
        self._held = data[whole:]
        return [data[i : min(i + self._chunk_bytes, whole)] for i in range(0, whole, self._chunk_bytes)]

    def finish(self) -> list[bytes]:
        if not self._held:
            return []
        last = self._held + b"\x00" * (GROUP_BYTES - len(self._held))
        self._held = b""
        return [last]
