"""The Backend seam between the chat service and an inference engine: what goes in, what comes out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from qwenhost.core.errors import ServeError
from qwenhost.core.types import CacheReport, SamplingParams

EngineFinish = Literal["stop", "length"]


class TokenConstraint(Protocol):
    """A per-sequence grammar state (built by constrain/); the engine masks logits with it."""

    def allowed_tokens(self) -> Any:
        """A boolean/bitmask object the backend understands, or None when any token is allowed."""

    def consume(self, token_id: int) -> None: ...

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar forces next (may be empty)."""

    def is_finished(self) -> bool: ...


class ConstraintFactory(Protocol):
    def __call__(self) -> TokenConstraint: ...


@dataclass(frozen=True, slots=True)
class ReasoningBudget:
    """How the engine follows a thinking answer (spec §1.3 #14, #21): after ``budget`` thought tokens it
    forces ``close_tokens`` so the answer always comes, and once the thought is closed the answer may
    use at most ``max_answer_tokens``. Thought tokens are those between the tags, tags excluded."""

    budget: int | None  # None: no limit but max_new_tokens
    close_tokens: tuple[int, ...]
    open_at_start: bool  # the prompt already opened the thought (thinking-only templates)
    open_tokens: tuple[int, ...] = ()  # a thought opens only if the output starts with these
    max_answer_tokens: int | None = None  # max_tokens bounds only the answer


@dataclass(frozen=True, slots=True)
class VisualInput:
    """An image (one frame) or a video run (an even number of frames merged in temporal pairs), already
    at its final size; ``temporal_positions`` holds each chunk's M-RoPE time offset (spec §4.11)."""

    width: int
    height: int
    frames: tuple[bytes, ...] = field(repr=False)  # RGB888 rows
    digest: bytes
    temporal_positions: tuple[int, ...] = (0,)

    @property
    def num_chunks(self) -> int:
        return max(1, len(self.frames) // 2) if len(self.frames) > 1 else 1


@dataclass(frozen=True, slots=True)
class AudioInput:
    pcm: bytes = field(repr=False)  # mono float32 at MediaCapabilities.audio_sample_rate
    digest: bytes


MediaInput = VisualInput | AudioInput
PromptPiece = tuple[int, ...] | MediaInput  # text tokens or one media item, in prompt order


@dataclass(frozen=True, slots=True)
class MediaSpan:
    """One encoder chunk inside a prompt: ``n_tokens`` KV cells from prompt index ``offset``.

    ``pos`` is the position of its first cell; with ``is_flat`` every cell shares it (M-RoPE images put
    rows and columns in the other rope sections), and ``next_pos`` is where the text after it resumes —
    so an image advances the position by less than its token count. ``key`` identifies the content (and
    its position layout) for prefix matching; the prompt holds ``key`` in each of the span's cells.
    """

    offset: int
    n_tokens: int
    pos: int
    next_pos: int
    is_flat: bool
    key: int
    unit_offset: int  # first cell of the media item this chunk belongs to: prefix reuse never cuts an item
    payload: Any = field(default=None, repr=False, compare=False)  # engine-specific (what to encode)

    @property
    def end(self) -> int:
        return self.offset + self.n_tokens


@dataclass(frozen=True, slots=True)
class EnginePrompt:
    """A multimodal prompt: token ids (media cells hold their span key, a negative id) and its spans."""

    tokens: tuple[int, ...]
    media: tuple[MediaSpan, ...]
    piece_tokens: tuple[int, ...]  # KV cells taken by each media piece passed in, in order


@dataclass(frozen=True, slots=True)
class MediaCapabilities:
    """What the model's projector (mmproj) accepts; read from its GGUF metadata (clip.*)."""

    vision_projector: str | None  # clip.projector_type / clip.vision.projector_type, e.g. qwen2.5vl_merger
    audio_projector: str | None
    patch_size: int = 0
    merge_size: int = 1
    audio_sample_rate: int = 0
    uses_mrope: bool = False

    @property
    def pixels_per_token_side(self) -> int:
        """28 for Qwen2/2.5-VL (14 px patches merged 2x2), 32 for Qwen3-VL (16 px patches)."""
        return self.patch_size * self.merge_size


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    prompt: tuple[int, ...]
    sampling: tuple[SamplingParams, ...]  # one per choice; len == n
    max_new_tokens: int
    stop_sequences: tuple[tuple[int, ...], ...] = ()  # token ids that end a choice (not part of the text)
    stop_strings: tuple[bytes, ...] = ()  # UTF-8 stop strings: the engine stops the choice when one completes
    top_logprobs: int | None = None  # None: no logprobs; 0..5: the chosen token plus that many alternatives
    cache_pins: tuple[int, ...] = ()  # prompt prefix lengths to pin for 5 minutes (explicit cache, spec §4.2)
    cache_salt: str = ""  # cached prefixes are shared only between requests with the same salt
    constraint: ConstraintFactory | None = None
    reasoning_budget: ReasoningBudget | None = None
    media: tuple[MediaSpan, ...] = ()  # spans of media cells in ``prompt`` (built by Backend.build_prompt)
    # Test seam ([server] test_faults): the engine raises inside this request's sampling of its first
    # token, so the chaos tests can prove that a fault fails only the request it concerns.
    inject_fault: bool = False

    @property
    def n(self) -> int:
        return len(self.sampling)


@dataclass(frozen=True, slots=True)
class TokenAlternative:
    token_id: int
    piece: bytes
    logprob: float | None


@dataclass(frozen=True, slots=True)
class TokenOut:
    """One sampled token of one choice. ``is_end`` tokens (EOG, stop ids) carry no text."""

    choice: int
    token_id: int
    piece: bytes
    finish: EngineFinish | None = None
    is_end: bool = False
    logprob: float | None = None
    top: tuple[TokenAlternative, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptDone:
    prompt_tokens: int
    cache: CacheReport


@dataclass(frozen=True, slots=True)
class StepOut:
    tokens: tuple[TokenOut, ...]


EngineOutput = PromptDone | StepOut


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the service needs to know about a loaded model."""

    context_length: int
    n_vocab: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    metadata: Mapping[str, str]
    special_tokens: Mapping[str, int]  # text of control/special tokens -> id
    end_tokens: frozenset[int] = frozenset()  # end-of-generation tokens (EOS, EOT, <|im_end|> …)
    media: MediaCapabilities | None = None  # None: a text-only model


class Tokenizer(Protocol):
    """Text <-> token ids of one model. Thread-safe: the service tokenizes on worker threads."""

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> bytes: ...


class Reservation(Protocol):
    """Room an engine holds for one request (engine/admission.py); released once, idempotently."""

    num_seqs: int

    def release(self) -> None: ...


class GrammarVocabulary(Protocol):
    """An opaque handle on the model's vocabulary that constrain/ compiles grammars against."""


class Backend(Protocol):
    """What the service needs of an engine: capabilities (info), a tokenizer, capacity, generation, stats,
    health and shutdown. Loading is the composition root's business (main.py starts the concrete class)."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def reserve(self, num_seqs: int) -> Reservation:
        """Hold room for a request of ``num_seqs`` sequences or raise at once: Throttled (429) when full,
        ServiceUnavailable (503) while draining or stalled. Atomic and thread-safe."""

    def generate(self, request: GenerationRequest, reservation: Reservation) -> AsyncIterator[EngineOutput]:
        """Run one request inside its reservation, released when the iterator ends; closing the iterator
        early aborts the request and frees its sequences at any stage (queued, prefilling, decoding)."""

    def build_prompt(self, pieces: Sequence[PromptPiece]) -> EnginePrompt:
        """Lay text tokens and media out in KV cells and positions (only when ``info.media`` is set;
        blocking, thread-safe: the service calls it from a worker thread)."""

    def grammar_vocabulary(self) -> GrammarVocabulary | None:
        """The vocabulary constrain/ compiles response_format and tool grammars against, or None when the
        backend cannot apply grammars. Blocking (built once beside start-up); call it off the event loop."""

    def stats(self) -> Mapping[str, float]:
        """Gauges for /metrics (running sequences, queue depth, KV usage …)."""

    def health(self) -> str | None:
        """None while the engine is serving; else why not (stalled, stopped), for /health's 503."""

    def cancel_all(self, error: ServeError) -> None:
        """End every request in flight with ``error`` (a final event for each stream): graceful shutdown."""

    def stop_admitting(self, error: ServeError) -> None:
        """Every reserve() from now on raises ``error`` (the server is shutting down)."""

    def close(self) -> None:
        """Stop the engine (what is still in flight ends with ServiceUnavailable) and free the model."""
