"""The request body at the edge: read within ``[server] max_body_bytes``, parsed as JSON, and refused when
any string in it cannot be encoded (a lone surrogate) — before anything else looks at it."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from qwenhost.core.errors import BadRequestBody, InvalidParameter, ServeError

# DashScope admits base64 data URIs of up to 10 MiB decoded per media item (spec §4.11); a request with a
# few of them, base64-inflated by 4/3, fits in 64 MiB.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

# A lone surrogate reaches a decoded string only through a \uD800-\uDFFF escape, or through raw UTF-8
# surrogate bytes (ED A0-BF ..), which json.loads decodes with 'surrogatepass'. Either shows in the bytes,
# so the exact walk runs only for bodies that may hold one.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class BodyTooLarge(ServeError):
    """413: the body is over the server's limit; it is refused without being read into memory."""

    status = 413
    code = "invalid_request_error"

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"The request body is larger than this server's limit of {limit_bytes} bytes.")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as Content-Length or the bytes received pass ``max_bytes``
    (chunked bodies are counted as they arrive). The server discards whatever is left unread."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """The decoded body; 400 for bytes that are not JSON (spec §3.1, OBS-4)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadRequestBody() from None


def refuse_unencodable(raw: bytes, body: Any) -> None:
    """400 naming the place when a string of ``body`` (parsed from ``raw``) holds a lone surrogate."""
    if json.detect_encoding(raw) == "utf-8" and not _MAYBE_SURROGATE.search(raw):
        return
    where = find_lone_surrogate(body)
    if where is not None:
        raise InvalidParameter(
            f"Invalid text in {where}: it holds a lone surrogate (a \\ud800-\\udfff escape without its pair), "
            "which is not valid Unicode and cannot be encoded as UTF-8."
        )


def find_lone_surrogate(body: Any) -> str | None:
    """Where the first string holding a lone surrogate is (``messages[0].content``, ``a key of stop``), or
    None. Iterative: a deeply nested body cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _encodes(value):
                return path or "the request body"
        elif isinstance(value, dict):
            items = list(value.items())
            for key, child in reversed(items):
                if not _encodes(key):
                    return f"a key of {path or 'the request body'}"
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(value))))
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
