"""Server-sent-event framing of chat chunks: ``data: {json}`` + blank line, ending with ``data: [DONE]``."""

from __future__ import annotations

from typing import Any

from qwenhost.api.errors import dumps

DONE = b"data: [DONE]\n\n"


def frame(payload: dict[str, Any]) -> bytes:
    return f"data: {dumps(payload)}\n\n".encode()
