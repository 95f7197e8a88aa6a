"""The engine's TokenConstraint over llguidance's LLMatcher, and grammars compiled once per request."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping

import llguidance
import numpy as np

from qwenhost.constrain.grammar import ToolKind, ToolSyntax
from qwenhost.core.errors import InvalidParameter

log = logging.getLogger("qwenhost.constrain")


class GrammarConstraint:
    """One sequence's grammar state; the engine thread calls it once per sampled token.

    Implements engine.protocol.TokenConstraint: ``allowed_tokens()`` is a boolean vector over the
    vocabulary (None while every token is allowed, so free text costs no masking).
    """

    def __init__(self, matcher: llguidance.LLMatcher, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._is_reported = False

    def allowed_tokens(self) -> np.ndarray | None:
        packed = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(packed, bitorder="little")[: self._n_vocab].astype(bool)
        if allowed.all():
            return None
        return allowed

    def forced_tokens(self) -> list[int]:
        return list(self._matcher.compute_ff_tokens())

    def consume(self, token_id: int) -> None:
        if not self._matcher.consume_token(token_id):
            self._report()

    def is_finished(self) -> bool:
        return bool(self._matcher.is_stopped())

    def _report(self) -> None:
        # Only a token the mask did not offer gets here (e.g. a forced thinking-budget tag); the
        # matcher then stops, and so does the sequence, with what it has.
        if not self._is_reported:
            self._is_reported = True
            log.warning("a token broke the grammar: %s", self._matcher.get_error().splitlines()[0])


class CompiledGrammar:
    """A grammar compiled and checked once; each sequence gets its own copy of the state. The compiled
    template is never advanced in place, so one instance may be shared by requests (constrain/cache.py)."""

    def __init__(self, vocabulary: object, grammar: str) -> None:
        # The engine hands the vocabulary over as an opaque handle (engine/protocol.py GrammarVocabulary).
        if not isinstance(vocabulary, llguidance.LLTokenizer):
            raise TypeError(f"expected an llguidance vocabulary, got {type(vocabulary).__name__}")
        tokenizer = vocabulary
        template = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if template.is_error():
            detail = template.get_error().strip().splitlines()
            raise InvalidParameter(f"The output constraint cannot be compiled: {detail[0] if detail else grammar}")
        self._template = template
        self._n_vocab = int(tokenizer.vocab_size)
        self._tokenizer = tokenizer

    def after(self, text: str) -> CompiledGrammar | None:
        """A copy whose sequences start after ``text`` (a partial-mode assistant prefix), or None if the
        text breaks the grammar. This grammar is left as it was."""
        matcher = self._template.deep_copy()
        tokens = self._tokenizer.tokenize_str(text, parse_special=True)
        if not matcher.consume_tokens(tokens) or matcher.is_error():
            return None
        advanced = copy.copy(self)
        advanced._template = matcher
        return advanced

    def __call__(self) -> GrammarConstraint:
        return GrammarConstraint(self._template.deep_copy(), self._n_vocab)


def tool_syntax(
    kind: ToolKind,
    open_tag: str,
    close_tag: str,
    tokenizer: llguidance.LLTokenizer,
    special_tokens: Mapping[str, int],
    end_tokens: Iterable[int],
) -> ToolSyntax:
    """Which tags are single special tokens for this vocabulary (Qwen2.5/3 have ``<tool_call>`` as one;
    small ChatML models spell it out), and which other special tokens free text may contain."""

    def special(tag: str) -> int | None:
        token = special_tokens.get(tag)
        return token if token is not None and tokenizer.is_special_token(token) else None

    ends = set(end_tokens)
    tags = {open_tag, close_tag}
    free = tuple(
        sorted(t for text, t in special_tokens.items() if text not in tags and t not in ends and special(text) == t)
    )
    return ToolSyntax(
        kind=kind,
        open_tag=open_tag,
        close_tag=close_tag,
        open_token=special(open_tag),
        close_token=special(close_tag),
        text_special_tokens=free,
    )
