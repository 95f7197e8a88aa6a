"""ServeError -> the DashScope error envelope (spec §3.1); the only place that shapes error bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from qwenhost.core import ids
from qwenhost.core.errors import ServeError


def error_body(error: ServeError, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": {"code": error.code, "param": error.param, "message": error.message, "type": error.type}
    }
    if error.status != 401:  # 401 bodies carry only request_id (spec §3.1, OBS-5)
        body["id"] = ids.completion_id(request_id)
    body["request_id"] = request_id
    return body


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def error_response(error: ServeError, request_id: str, *, is_sse: bool = False) -> Response:
    """A streaming request that fails before output gets the error status with an SSE body (spec §3.1)."""
    text = dumps(error_body(error, request_id))
    headers = {"x-request-id": request_id}
    if is_sse:
        return Response(f"data: {text}\n\n", status_code=error.status, media_type="text/event-stream", headers=headers)
    return Response(text, status_code=error.status, media_type="application/json", headers=headers)
