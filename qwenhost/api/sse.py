"""Server-sent-event framing of chat chunks: ``data: {json}`` + blank line, ending with ``data: [DONE]``."""

from __future__ import annotations

from typing import Any

from qwenhost.api.errors import dumps

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"  # an SSE comment: parsers skip it (a server-side tool is running)


def frame(payload: dict[str, Any]) -> bytes:
    return f"data: {dumps(payload)}\n\n".encode()
