"""Streaming text -> whole sentences, so that each is spoken as soon as it is complete (incremental only)."""

from __future__ import annotations

import re

# Sentence ends: Chinese and Western punctuation, and line breaks (lists, headings).
_END = re.compile(r"[。！？；!?;\n]+|[.](?=\s)|[.]$")
MAX_SENTENCE_CHARS = 200  # a sentence longer than this is spoken in pieces, cut at the last space or comma


class SentenceSplitter:
    """``feed(text)`` returns the sentences completed so far; ``finish()`` the rest."""

    def __init__(self, max_chars: int = MAX_SENTENCE_CHARS) -> None:
        self._max_chars = max_chars
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        while True:
            match = _END.search(self._buffer)
            # A "." at the very end may be a decimal point or an abbreviation still being written: wait.
            if match is not None and match.group() == "." and match.end() == len(self._buffer):
                match = None
            if match is not None:
                out.append(self._buffer[: match.end()])
                self._buffer = self._buffer[match.end() :]
            elif len(self._buffer) > self._max_chars:
                cut = max(self._buffer.rfind(c, 0, self._max_chars) for c in " ,，、") + 1 or self._max_chars
                out.append(self._buffer[:cut])
                self._buffer = self._buffer[cut:]
            else:
                break
        return [s for s in (piece.strip() for piece in out) if _is_speakable(s)]

    def finish(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if _is_speakable(rest) else []


def _is_speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)
