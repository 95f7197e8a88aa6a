"""What the server read differently from what was asked, as response headers: nothing is ignored unseen.

``x-qwenhost-ignored`` names the request fields (and headers) that have no effect here, and
``x-qwenhost-adjusted`` each parameter the server read differently (a limit lowered to what the model
or the context can hold, a parameter the model cannot use). Both are bounded: names are ASCII, at most
64 characters, at most MAX_NAMES of them; anything else is counted, not echoed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

IGNORED_HEADER = "x-qwenhost-ignored"
ADJUSTED_HEADER = "x-qwenhost-adjusted"
MAX_NAMES = 16
_PRINTABLE = re.compile(r"[\x20-\x7e]{1,160}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _join(items: Iterable[str], pattern: re.Pattern[str], separator: str) -> str:
    shown: list[str] = []
    hidden = 0
    for item in items:
        if len(shown) < MAX_NAMES and pattern.fullmatch(item) and separator.strip() not in item:
            shown.append(item)
        else:
            hidden += 1
    if hidden:
        shown.append(f"+{hidden} more")
    return separator.join(shown)


def note_headers(ignored: tuple[str, ...], adjusted: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    if ignored:
        headers[IGNORED_HEADER] = _join(ignored, _NAME, ", ")
    if adjusted:
        headers[ADJUSTED_HEADER] = _join(adjusted, _PRINTABLE, "; ")
    return headers
