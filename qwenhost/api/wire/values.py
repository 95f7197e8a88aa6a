"""JSON value checks as DashScope applies them (a bool is not a number) and its shared messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qwenhost.core.errors import InvalidParameter

BAD_CONTENT_ITEM = "The provided messages input is invalid. The error info is [Unexpected item type in content]"
INVALID_PARAMETERS = "Required parameter(s) missing or invalid, please check the request parameters."


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def read_bool(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """An optional boolean field: absent or null is ``default``; anything but true/false is refused."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParameter(f"'{key}' must be Boolean")
    return value
