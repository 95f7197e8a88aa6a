"""FakeBackend: a scripted engine for unit and contract tests (one token per character)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from qwenhost.core.errors import InternalError, ServeError, Throttled
from qwenhost.core.types import CacheReport
from qwenhost.engine.admission import Admission
from qwenhost.engine.protocol import (
    EngineOutput,
    EnginePrompt,
    GenerationRequest,
    GrammarVocabulary,
    ModelInfo,
    PromptDone,
    PromptPiece,
    Reservation,
    StepOut,
    TokenOut,
)

END_TOKEN = 0  # the fake vocabulary: token id = Unicode code point; 0 ends a choice
FAKE_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

Script = Callable[[GenerationRequest, int], str]


def echo_script(request: GenerationRequest, choice: int) -> str:
    return "Hello from the fake model."


class FakeTokenizer:
    """The fake vocabulary: one token per character, its Unicode code point."""

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: list[int]) -> bytes:
        return "".join(chr(t) for t in tokens if t > 0).encode("utf-8")


@dataclass
class FakeBackend:
    """Answers each choice with ``script(request, choice)``; honours max_new_tokens, stop ids and strings."""

    script: Script = echo_script
    context_length: int = 4096
    capacity: int = 1000
    step_delay_s: float = 0.0
    chat_template: str = FAKE_TEMPLATE
    requests: list[GenerationRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    in_flight: int = 0
    admission: Admission = field(default_factory=lambda: Admission(num_slots=4, max_waiting=1 << 30))
    _cancel: ServeError | None = None

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            context_length=self.context_length,
            n_vocab=0x110000,
            chat_template=self.chat_template,
            bos_token="",
            eos_token="<|im_end|>",
            metadata={"general.architecture": "fake"},
            special_tokens={},
            end_tokens=frozenset({END_TOKEN}),
        )

    @property
    def tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def reserve(self, num_seqs: int) -> Reservation:
        if self.admission.in_flight_requests >= self.capacity:  # one event loop: no race to guard
            raise Throttled()
        return self.admission.reserve(num_seqs)

    async def generate(self, request: GenerationRequest, reservation: Reservation) -> AsyncIterator[EngineOutput]:
        self.requests.append(request)
        self.in_flight += 1
        finished = False
        try:
            if request.inject_fault:  # the engine's test seam: the request fails at its first token
                raise InternalError()
            yield PromptDone(len(request.prompt), CacheReport())
            texts = [self.script(request, c) for c in range(request.n)]
            streams = [self._tokens(request, c, t) for c, t in enumerate(texts)]
            while any(streams):
                step = []
                for stream in streams:
                    if stream:
                        step.append(stream.pop(0))
                if self.step_delay_s:
                    await asyncio.sleep(self.step_delay_s)
                if self._cancel is not None:
                    raise self._cancel
                yield StepOut(tuple(step))
                streams = [s for s in streams if s]
            finished = True
        finally:
            reservation.release()
            self.in_flight -= 1
            if not finished:
                self.aborted.append(request.request_id)

    def _tokens(self, request: GenerationRequest, choice: int, text: str) -> list[TokenOut]:
        out: list[TokenOut] = []
        stops = {s[0] for s in request.stop_sequences if len(s) == 1}
        produced = b""
        for ch in text:
            token = ord(ch)
            if token in stops:
                out.append(TokenOut(choice, token, b"", finish="stop", is_end=True))
                return out
            piece = ch.encode("utf-8")
            produced += piece
            done = len(out) + 1 >= request.max_new_tokens
            hit = any(s in produced for s in request.stop_strings)
            finish = "stop" if hit else ("length" if done else None)
            lp = None if request.top_logprobs is None else -0.5
            out.append(TokenOut(choice, token, piece, finish=finish, logprob=lp))  # type: ignore[arg-type]
            if finish:
                return out
        out.append(TokenOut(choice, END_TOKEN, b"", finish="stop", is_end=True))
        return out

    def build_prompt(self, pieces: Sequence[PromptPiece]) -> EnginePrompt:
        raise NotImplementedError("the fake model is text-only (info.media is None)")

    def grammar_vocabulary(self) -> GrammarVocabulary | None:
        return None  # scripted output: there are no logits to constrain

    def stats(self) -> Mapping[str, float]:
        return {"in_flight_requests": self.in_flight}

    def health(self) -> str | None:
        return None

    def cancel_all(self, error: ServeError) -> None:
        self._cancel = error

    def stop_admitting(self, error: ServeError) -> None:
        self.admission.refuse(error)

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None
