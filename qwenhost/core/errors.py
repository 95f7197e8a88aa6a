"""Typed request errors; api/errors.py alone turns them into the DashScope envelope (spec §3)."""

from __future__ import annotations

# Messages that DashScope raises from its inference layer carry this prefix (spec §3.1, OBS-2).
ALGO_PREFIX = "<400> InternalError.Algo.InvalidParameter: "


class ServeError(Exception):
    """An error that is answered to the client with a DashScope error body."""

    status: int = 400
    code: str = "invalid_parameter_error"
    type: str = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if type is not None:
            self.type = type
        self.param = param


class InvalidParameter(ServeError):
    """400 invalid_parameter_error raised by the gateway-level validator."""


class AlgoInvalidParameter(InvalidParameter):
    """400 raised by DashScope's inference layer: the message carries the Algo prefix."""

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(ALGO_PREFIX + message, **kwargs)  # type: ignore[arg-type]


class NotSupportEnableThinking(InvalidParameter):
    """enable_thinking on a model that cannot think: the catalogue's own code (spec §3.2)."""

    code = "InvalidParameter.NotSupportEnableThinking"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model {model} does not support enable_thinking.")


class AsyncNotSupported(ServeError):
    """``X-DashScope-Async: enable``: DashScope's own 403 for a synchronous-only API (spec §3.2, §5.3)."""

    status = 403
    code = "access_denied"

    def __init__(self) -> None:
        super().__init__("Current user api does not support asynchronous calls.")


class InvalidValue(ServeError):
    """400 for OpenAI-compatible value errors such as seed (spec §3.2)."""

    code = "invalid_value"


class BadRequestBody(ServeError):
    """400 for a body that is not a JSON object (spec §3.1, OBS-4)."""

    code = "invalid_request_error"

    def __init__(self) -> None:
        super().__init__("Required body invalid, please check the request body format.")


class MissingModel(ServeError):
    code = "invalid_request_error"

    def __init__(self) -> None:
        super().__init__("you must provide a model parameter.")


class ModelNotFound(ServeError):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str, message: str | None = None) -> None:
        super().__init__(message or f"The model `{model}` does not exist or you do not have access to it.")


class InvalidApiKey(ServeError):
    status = 401
    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__(
            "Incorrect API key provided. For details, see: "
            "https://www.alibabacloud.com/help/en/model-studio/error-code#apikey-error"
        )


class Throttled(ServeError):
    status = 429
    code = "Throttling.Concurrency"

    def __init__(self, message: str = "Too many concurrent requests.") -> None:
        super().__init__(message)


class CapacityExceeded(ServeError):
    status = 503
    code = "ServiceUnavailable"

    def __init__(self) -> None:
        super().__init__(
            "Too many requests. Your requests are being throttled due to system capacity "
            "limits. Please try again later."
        )


class ModelUnavailable(ServeError):
    status = 503
    code = "ServiceUnavailable"

    def __init__(self) -> None:
        super().__init__("Model is unavailable, please try again later.")


class ServiceUnavailable(ServeError):
    """503 with a reason: the server is shutting down, or its engine stopped making progress."""

    status = 503
    code = "ServiceUnavailable"


class UnencodableText(InvalidParameter):
    """400 for text that cannot be encoded as UTF-8 (a lone surrogate such as ``\\udcff``, valid in JSON)."""

    MESSAGE = (
        "The request contains text that is not valid Unicode (a lone surrogate such as \\udcff); "
        "send text as valid UTF-8."
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class NotSupported(InvalidParameter):
    """A documented DashScope parameter that this server cannot honour (never silently ignored)."""


class InternalError(ServeError):
    status = 500
    code = "internal_error"
    type = "internal_error"

    def __init__(
        self,
        message: str = "An internal error has occurred, please try again later or contact service support.",
    ) -> None:
        super().__init__(message)
