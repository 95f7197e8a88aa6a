"""The Tokenizer port of one loaded model: text <-> token ids over the runner's vocabulary."""

from __future__ import annotations

from qwenhost.core.errors import InvalidParameter
from qwenhost.engine.llamacpp.runner import LlamaRunner


class LlamaTokenizer:
    """Thread-safe: llama_tokenize only reads the vocabulary, and the pieces table never changes."""

    def __init__(self, runner: LlamaRunner) -> None:
        self._runner = runner
        self._pieces = runner.pieces

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        try:
            return self._runner.tokenize(text, add_special=add_special, parse_special=parse_special)
        except UnicodeEncodeError:
            # A lone surrogate (valid JSON, "\udcff") is not text: refused, never a 500 (issue 10).
            raise InvalidParameter("The input contains a lone surrogate, which is not valid Unicode text.") from None

    def detokenize(self, tokens: list[int]) -> bytes:
        pieces = self._pieces
        return b"".join(pieces[t] for t in tokens if 0 <= t < len(pieces))
