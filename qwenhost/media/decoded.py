"""What the decoders hand to the service: pixels already at their final size, PCM at the model's rate."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Picture:
    """RGB888 pixels, row-major, ``width * height * 3`` bytes."""

    width: int
    height: int
    rgb: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Frames:
    """Video frames (an even count, all one size) and each frame's time in seconds."""

    pictures: tuple[Picture, ...]
    timestamps: tuple[float, ...]
    fps: float  # sampling rate the frames stand for (positions and timestamps are derived from it)


@dataclass(frozen=True, slots=True)
class Clip:
    """Mono PCM, float32 little-endian."""

    pcm: bytes = field(repr=False)
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 4 / self.sample_rate


def digest(*blobs: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for blob in blobs:
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.digest()
