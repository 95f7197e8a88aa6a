"""The per-sequence decoder: sampler, grammar constraint, thought tracking, stop tail and forced tokens.

One per running choice, on the engine thread. It turns one logits row into one TokenOut and says when
the choice ends; the scheduler keeps where the sequence's cells are, the decoder what it means.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qwenhost.core.types import SamplingParams
from qwenhost.engine.llamacpp.sampler import mask_logits, token_logprobs
from qwenhost.engine.protocol import EngineFinish, GenerationRequest, TokenAlternative, TokenConstraint, TokenOut
from qwenhost.engine.thought import ThoughtTracker


class Sampler(Protocol):
    """A seeded sampler chain (sampler.SequenceSampler on llama.cpp)."""

    def sample(self, row: int) -> int: ...

    def sample_array(self, logits: np.ndarray) -> int: ...

    def accept(self, token: int) -> None: ...

    def free(self) -> None: ...


SamplerFactory = Callable[[SamplingParams, Sequence[int]], Sampler]  # (params, prompt) -> sampler


class Vocabulary(Protocol):
    """What a decoder reads of the model: logits rows of the last decode, token pieces, end tokens."""

    @property
    def pieces(self) -> Sequence[bytes]: ...

    @property
    def eog(self) -> frozenset[int]: ...

    def logits(self, row: int) -> np.ndarray: ...


class InjectedFault(RuntimeError):
    """Raised by the test seam (GenerationRequest.inject_fault) inside a request's first sampling."""

    def __init__(self) -> None:
        super().__init__("injected fault")


# Constrained output that repeats itself: a grammar allows a string (or an array) to go on, and a small model
# can loop inside it until the context is full (a tool argument repeating one sentence for 200 s). When the
# last span_tokens tokens of a constrained region are one block of at most max_period tokens repeated, the
# choice ends with finish_reason "length" (docs/tools-and-structured-output.md). These are the defaults of
# the per-model settings constrained_loop_tokens and constrained_loop_period (config.py checks their ranges).
LOOP_SPAN_TOKENS = 128
LOOP_MAX_PERIOD = 32


@dataclass(frozen=True, slots=True)
class LoopGuard:
    """When constrained output is a loop: its last ``span_tokens`` tokens are one block of at most
    ``max_period`` tokens repeated (so at least span_tokens / max_period times). ``span_tokens`` 0: never."""

    span_tokens: int = LOOP_SPAN_TOKENS
    max_period: int = LOOP_MAX_PERIOD

    def __post_init__(self) -> None:
        if self.span_tokens < 0 or self.max_period < 1:
            raise ValueError(f"a loop guard needs span_tokens >= 0 and max_period >= 1, not {self}")
        if self.span_tokens and self.span_tokens < 2 * self.max_period:
            raise ValueError(f"a loop guard's span must hold the longest block twice, not {self}")


DEFAULT_LOOP_GUARD = LoopGuard()


class LoopWatch:
    """Whether the tokens pushed so far end in a loop (LoopGuard), in O(max_period) time and memory a token
    whatever the span: for each period p it counts the latest tokens in a row that equal the token p before
    them; the last span_tokens tokens are one block of p repeated once span_tokens - p of them do."""

    def __init__(self, guard: LoopGuard) -> None:
        self.guard = guard
        self._history: deque[int] = deque(maxlen=guard.max_period)
        self._runs = [0] * guard.max_period  # _runs[p - 1]: for period p

    def push(self, token: int) -> bool:
        span = self.guard.span_tokens
        if not span:
            return False
        history, runs = self._history, self._runs
        is_loop = False
        for p in range(1, len(history) + 1):  # a period longer than what came before has nothing to match
            runs[p - 1] = runs[p - 1] + 1 if history[-p] == token else 0
            is_loop = is_loop or runs[p - 1] >= span - p
        history.append(token)
        return is_loop


class SequenceDecoder:
    def __init__(
        self,
        request: GenerationRequest,
        choice: int,
        sampler: Sampler,
        vocab: Vocabulary,
        loop_guard: LoopGuard = DEFAULT_LOOP_GUARD,
    ) -> None:
        self.choice = choice
        self.sampler = sampler
        self.vocab = vocab
        self.constraint: TokenConstraint | None = request.constraint() if request.constraint is not None else None
        self.stop_ids = frozenset(s[0] for s in request.stop_sequences if len(s) == 1)
        self.stop_strings = request.stop_strings
        self._stop_span = max((len(s) for s in request.stop_strings), default=0)
        self.tail = b""  # the last bytes of output, for stop strings that span tokens
        budget = request.reasoning_budget
        self.thought = ThoughtTracker(budget) if budget is not None else None
        self.forced: deque[int] = deque()  # tokens emitted next without sampling (thinking budget)
        self.top_logprobs = request.top_logprobs
        self.max_new_tokens = request.max_new_tokens
        self.num_generated = 0
        self._loop = LoopWatch(loop_guard)  # constrained output only
        self._is_fault_armed = request.inject_fault

    def next_tokens(self, row: int, stored: np.ndarray | None = None) -> list[TokenOut]:
        """The sampled token, then every token the grammar forces after it (jump-forward): a run of forced
        tokens (a schema's fixed keys, a tool call's name) leaves in one step and is decoded in one batch.
        Not while logprobs are asked for (a forced token has no row of its own) or a thought close is due."""
        outs = [self.next_token(row, stored)]
        if self.constraint is None or self.top_logprobs is not None:
            return outs
        while outs[-1].finish is None and not self.forced:
            run = self.constraint.forced_tokens()
            if not run:
                break
            for token in run:
                outs.append(self._emit_forced(token))
                if outs[-1].finish is not None:
                    break
        return outs

    def _emit_forced(self, token: int) -> TokenOut:
        assert self.constraint is not None
        self.sampler.accept(token)
        self.constraint.consume(token)
        self.num_generated += 1
        finish, is_end = self._check_finish(token)
        return TokenOut(self.choice, token, b"" if is_end else self.vocab.pieces[token], finish=finish, is_end=is_end)

    def next_token(self, row: int, stored: np.ndarray | None = None) -> TokenOut:
        """Choose the next token from logits row ``row`` of the last decode, or from ``stored``: the
        logits kept for an identical prompt whose KV is reused whole (see KvCache.best_source)."""
        if self._is_fault_armed:
            raise InjectedFault()
        wants_logprobs = self.top_logprobs is not None
        logits: np.ndarray | None = None
        if stored is not None:
            logits = stored.copy() if self.constraint is not None else stored  # the kept row stays intact
        elif wants_logprobs or self.constraint is not None:
            logits = self.vocab.logits(row)
        raw = logits.copy() if (wants_logprobs and logits is not None and self.constraint is not None) else logits
        token = self._choose(row, logits, is_stored=stored is not None)
        if self.constraint is not None:
            self.constraint.consume(token)
        logprob: float | None = None
        top: tuple[TokenAlternative, ...] = ()
        if wants_logprobs and raw is not None:
            logprob, alternatives = token_logprobs(raw, token, self.top_logprobs or 0)
            top = tuple(TokenAlternative(t, self.vocab.pieces[t], lp) for t, lp in alternatives)
        self.num_generated += 1
        finish, is_end = self._check_finish(token)
        piece = b"" if is_end else self.vocab.pieces[token]
        return TokenOut(self.choice, token, piece, finish=finish, is_end=is_end, logprob=logprob, top=top)

    def _choose(self, row: int, logits: np.ndarray | None, *, is_stored: bool) -> int:
        if self.forced:
            token = self.forced.popleft()
            self.sampler.accept(token)
            return token
        if self.constraint is not None and logits is not None:
            # A token the grammar forces needs no mask (one token per step; the rest follow).
            forced = self.constraint.forced_tokens()
            if forced:
                self.sampler.accept(forced[0])
                return forced[0]
            allowed = self.constraint.allowed_tokens()
            if allowed is not None:
                mask_logits(logits, allowed)
        if is_stored and logits is not None:
            return self.sampler.sample_array(logits)
        return self.sampler.sample(row)

    def _check_finish(self, token: int) -> tuple[EngineFinish | None, bool]:
        if token in self.vocab.eog or token in self.stop_ids:
            return "stop", True
        if self.stop_strings:
            piece = self.vocab.pieces[token]
            self.tail = (self.tail + piece)[-(len(piece) + self._stop_span) :]
            if any(s in self.tail for s in self.stop_strings):
                return "stop", False
        if self.constraint is not None:
            if self.constraint.is_finished():
                return "stop", False
            if self._loop.push(token):
                return "length", False
        if self.thought is not None:
            # thinking_budget: once the thought has used it, the close tag is forced (spec §1.3 #21).
            self.forced.extend(self.thought.on_token(token, self.vocab.pieces[token]))
            if self.thought.is_answer_done:
                return "length", False
        if self.num_generated >= self.max_new_tokens:
            return "length", False
        return None, False

    def free(self) -> None:
        self.sampler.free()
