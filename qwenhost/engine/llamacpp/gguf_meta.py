"""A minimal GGUF metadata reader (header key/values only), for the mmproj's clip.* keys.

llama.cpp exposes a text model's metadata but not a projector's, and the projector type decides
pixels per token and default pixel limits. Arrays are skipped; tensors are never read.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    if n > 1 << 24:
        raise ValueError("implausible GGUF string length")
    return f.read(n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        item_type, count = _read(f, "<I"), _read(f, "<Q")
        for _ in range(count):
            _value(f, item_type)
        return None
    raise ValueError(f"unknown GGUF value type {vtype}")


def read_metadata(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        _read(f, "<Q")  # tensor count
        n_kv = _read(f, "<Q")
        out: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _string(f)
            value = _value(f, _read(f, "<I"))
            if value is not None:
                out[key] = value
        return out
