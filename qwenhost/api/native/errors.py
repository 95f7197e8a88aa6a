"""ServeError -> the native error body ``{code, message, request_id}`` with DashScope's native codes."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from qwenhost.api.errors import dumps
from qwenhost.core.errors import ServeError

PREFIX = "/api/v1"  # where the native routes live, as the SDK's base_http_api_url names it
INVALID_API_KEY = "Invalid API-key provided."

# Compatible mode's lower-case codes -> the native protocol's (spec §5.1); native-looking codes pass through.
_NATIVE_CODES = {
    "invalid_parameter_error": "InvalidParameter",
    "invalid_request_error": "InvalidParameter",
    "invalid_value": "InvalidParameter",
    "model_not_found": "ModelNotFound",
    "invalid_api_key": "InvalidApiKey",
    "internal_error": "InternalError",
    "access_denied": "AccessDenied",
}


def native_code(error: ServeError) -> str:
    if error.status == 413:
        return "BadRequest.TooLarge"
    if error.code in _NATIVE_CODES:
        return _NATIVE_CODES[error.code]
    if error.code[:1].isupper():
        return error.code
    return "InternalError" if error.status >= 500 else "InvalidParameter"


def native_error_body(error: ServeError, request_id: str) -> dict[str, Any]:
    code = native_code(error)
    message = INVALID_API_KEY if code == "InvalidApiKey" else error.message
    return {"code": code, "message": message, "request_id": request_id}


def native_error_response(error: ServeError, request_id: str, *, is_sse: bool = False) -> Response:
    """Errors before the first byte are plain JSON with the real status, stream or not (spec §9, decided)."""
    return Response(
        dumps(native_error_body(error, request_id)),
        status_code=error.status,
        media_type="application/json",
        headers={"x-request-id": request_id},
    )
