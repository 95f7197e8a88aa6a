"""JSON value checks as DashScope applies them (a bool is not a number) and its shared messages."""

from __future__ import annotations

import math
from typing import Any

BAD_CONTENT_ITEM = "The provided messages input is invalid. The error info is [Unexpected item type in content]"
INVALID_PARAMETERS = "Required parameter(s) missing or invalid, please check the request parameters."


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
