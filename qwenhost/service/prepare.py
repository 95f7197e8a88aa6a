"""prepare(): a request -> a Job, checks cheapest first, every request-level error raised before the first
byte. Blocking (render, tokenize, compile): ChatService.aprepare runs it on worker threads.

The order: the pure plan (service/plan.py), one template render, tokenization and the input-length
check, stop ids as text, the grammar (cached), then the capacity reservation — all before any media is
fetched. A media request stops there as a Draft holding its reservation; its prompt is finished once
its media is decoded, and the reservation is given back if that fails.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from qwenhost.constrain.cache import GrammarCache
from qwenhost.core.errors import NotSupported, UnencodableText
from qwenhost.core.types import ChatRequest
from qwenhost.engine.protocol import ConstraintFactory, GenerationRequest, MediaSpan, ReasoningBudget, Reservation
from qwenhost.service import structured, translation
from qwenhost.service.job import Job
from qwenhost.service.media import DecodedPart, MediaPipeline
from qwenhost.service.mmprompt import MediaPromptBuilder, MediaText, split_media, with_sentinels
from qwenhost.service.models import ModelRegistry, ServedModel
from qwenhost.service.plan import Plan, decide
from qwenhost.service.prompt import RenderedPrompt, cache_pins
from qwenhost.service.turn import Turn, build_turn
from qwenhost.service.vocabulary import VocabularyGate

log = logging.getLogger("qwenhost.service")

NO_AUDIO = "This model does not support audio output."  # [speech] enabled = false: DashScope's wording


@dataclass(frozen=True)
class Draft:
    """A request that passed every check that needs no media, with its engine room reserved."""

    request: ChatRequest
    model: ServedModel
    plan: Plan
    turn: Turn
    stop_strings: tuple[str, ...]
    stop_bytes: tuple[bytes, ...]  # the same, UTF-8: what the engine matches
    constraint: ConstraintFactory | None
    budget: ReasoningBudget | None
    request_id: str
    cache_salt: str
    inject_fault: bool
    reservation: Reservation
    media_text: MediaText | None = None  # the prompt cut at its media parts (media requests)

    def close(self) -> None:
        self.reservation.release()


@contextlib.contextmanager
def _encodable() -> Iterator[None]:
    # Only request text can fail to encode (a lone surrogate is valid JSON): a 400, never a 500.
    try:
        yield
    except UnicodeEncodeError:
        raise UnencodableText() from None


class Preparer:
    def __init__(
        self,
        registry: ModelRegistry,
        media: MediaPipeline,
        *,
        grammars: GrammarCache,
        vocabulary: VocabularyGate,
        request_timeout_s: float,
        cache_isolation: bool,
        audio_refusal: str | None = NO_AUDIO,
    ) -> None:
        self.registry = registry
        self.media = media
        self.grammars = grammars
        self.vocabulary = vocabulary
        self.request_timeout_s = request_timeout_s
        self.cache_isolation = cache_isolation
        self.audio_refusal = audio_refusal  # None: a speech engine speaks answers

    def prepare_text(self, request: ChatRequest, request_id: str, key_id: str | None, inject_fault: bool) -> Job:
        """The Job for a request without media parts."""
        with _encodable():
            request, model, plan = self._decide(request)
            assert not _has_media(request), "media requests go through draft_media() and finish_media()"
            turn = self._turn(request, model, plan)
            tokens = tuple(_tokenize(model, turn.text))
            plan.check_input_length(len(tokens))
            pins = cache_pins(lambda text: _tokenize(model, text), turn.text, turn.marks, tokens)
            draft = self._draft(request, model, plan, turn, request_id, key_id, inject_fault)
        try:
            return self._job(draft, RenderedPrompt(turn.text, tokens, pins))
        except BaseException:
            draft.close()
            raise

    def draft_media(self, request: ChatRequest, request_id: str, key_id: str | None, inject_fault: bool) -> Draft:
        """Every check of a media request that needs no media, then its reservation (fetch comes next)."""
        with _encodable():
            request, model, plan = self._decide(request)
            turn = self._turn(request, model, plan)
            num_media = sum(len(m.media) for m in request.messages)
            text = split_media(turn.text, lambda t: _tokenize(model, t), num_media)
            plan.check_input_length(text.num_text_tokens)  # a lower bound: media only adds tokens
            return self._draft(request, model, plan, turn, request_id, key_id, inject_fault, text)

    def finish_media(self, draft: Draft, decoded: Sequence[DecodedPart]) -> Job:
        """The Job once the draft's media is decoded; the reservation is given back if this fails."""
        try:
            assert draft.media_text is not None
            text, turn, model = draft.media_text, draft.turn, draft.model
            built = MediaPromptBuilder(model).build(text, decoded)
            draft.plan.check_input_length(len(built.tokens))
            # Markers after the first media part are not pinned (docs/caching): its cells are not text.
            marks = [m for m in turn.marks if m <= text.first_media_char]
            pins = cache_pins(lambda t: _tokenize(model, t), turn.text, marks, text.leading_tokens)
            prompt = RenderedPrompt(turn.text, built.tokens, pins)
            dropped = len(turn.marks) - len(marks)
            notes = (f"cache_control: {dropped} marker(s) after the first media part not cached",) if dropped else ()
            return self._job(draft, prompt, built.media, tuple(built.modal_tokens.items()), notes)
        except BaseException:
            draft.close()
            raise

    # -- stages -----------------------------------------------------------------------------------
    def _decide(self, request: ChatRequest) -> tuple[ChatRequest, ServedModel, Plan]:
        """The request the model answers (translation_options become its prompt), its model and its plan."""
        model, spec = self.registry.spec(request.model)  # the model's defaults under the name's policy
        if request.speaks and self.audio_refusal is not None:
            raise NotSupported(self.audio_refusal)
        request = translation.apply(request)
        plan = decide(request, spec)
        if _has_media(request):
            self.media.check_supported(request, model)  # text-only models: a clear 400, not a crash
        return request, model, plan

    @staticmethod
    def _turn(request: ChatRequest, model: ServedModel, plan: Plan) -> Turn:
        # Media parts are rendered as sentinels (mmprompt.py); a partial last message is the prefix.
        messages = with_sentinels(request.messages)
        if plan.partial_prefix is not None:
            messages = messages[:-1]
        return build_turn(model, messages, plan.thinking, tools=plan.tools, prefix=plan.partial_prefix)

    def _draft(
        self,
        request: ChatRequest,
        model: ServedModel,
        plan: Plan,
        turn: Turn,
        request_id: str,
        key_id: str | None,
        inject_fault: bool,
        media_text: MediaText | None = None,
    ) -> Draft:
        """Stops, thought budget and grammar; then the reservation, the last step that can refuse."""
        stops = _stop_strings(model, plan)
        stop_bytes = tuple(s.encode("utf-8") for s in stops)  # one that cannot be encoded fails here, unreserved
        constraint = None
        if plan.constraint is not None:
            vocabulary = functools.partial(self.vocabulary.get, model)  # waited for only on a cache miss
            constraint = structured.compile_constraint(plan.constraint, model, vocabulary, self.grammars)
        follows_thought = plan.is_thinking and turn.thought != "closed"
        budget = _reasoning_budget(model, plan, turn.thought == "inside") if follows_thought else None
        return Draft(
            request=request,
            model=model,
            plan=plan,
            turn=turn,
            stop_strings=stops,
            stop_bytes=stop_bytes,
            constraint=constraint,
            budget=budget,
            request_id=request_id,
            cache_salt=(key_id or "") if self.cache_isolation else "",
            inject_fault=inject_fault,
            reservation=model.backend.reserve(request.n),
            media_text=media_text,
        )

    def _job(
        self,
        draft: Draft,
        prompt: RenderedPrompt,
        spans: tuple[MediaSpan, ...] = (),
        modal: tuple[tuple[str, int], ...] = (),
        notes: tuple[str, ...] = (),
    ) -> Job:
        request, plan = draft.request, draft.plan
        # Every prompt the engine receives (each round of a tool loop, a translation prompt …), for debugging.
        log.debug("request %s prompt: %r", draft.request_id, prompt.text)
        max_new_tokens, length_note = plan.max_new_tokens(len(prompt.tokens), answer_only=draft.budget is not None)
        generation = GenerationRequest(
            request_id=draft.request_id,
            prompt=prompt.tokens,
            sampling=plan.sampling,
            max_new_tokens=max_new_tokens,
            stop_sequences=plan.stop_token_ids,
            stop_strings=draft.stop_bytes,
            top_logprobs=plan.top_logprobs,
            cache_pins=prompt.cache_pins,
            cache_salt=draft.cache_salt,
            inject_fault=draft.inject_fault,
            media=spans,
            reasoning_budget=draft.budget,
            constraint=draft.constraint,
        )
        return Job(
            request=request,
            model=draft.model,
            prompt=prompt,
            generation=generation,
            stop_strings=draft.stop_strings,
            request_id=draft.request_id,
            created=int(time.time()),
            is_thinking=plan.is_thinking,
            thought=draft.turn.thought,
            deadline_s=None if request.stream else time.monotonic() + self.request_timeout_s,
            reservation=draft.reservation,
            modal_tokens=modal,
            notes=plan.notes + notes + ((length_note,) if length_note else ()),
            policy=self.registry.policy(request.model),
        )


def _has_media(request: ChatRequest) -> bool:
    return any(m.media for m in request.messages)


def _tokenize(model: ServedModel, text: str) -> list[int]:
    return model.backend.tokenizer.tokenize(text, add_special=False, parse_special=True)


def _stop_strings(model: ServedModel, plan: Plan) -> tuple[str, ...]:
    """The plan's stop strings, then each longer stop id sequence as its text (single ids stop in the engine)."""
    strings = list(plan.stop_strings)
    for seq in plan.stop_id_sequences:
        text = model.backend.tokenizer.detokenize(list(seq)).decode("utf-8", errors="replace")
        if text:
            strings.append(text)
    return tuple(dict.fromkeys(strings))


def _reasoning_budget(model: ServedModel, plan: Plan, starts_inside: bool) -> ReasoningBudget:
    """What the engine needs to follow the thought: its tags as text and as token ids, the budget, the answer bound."""
    fmt = model.format
    return ReasoningBudget(
        budget=plan.thinking.budget,
        close_tokens=tuple(_tokenize(model, fmt.think_close)),
        open_at_start=starts_inside,
        open_tokens=tuple(_tokenize(model, fmt.think_open)),
        max_answer_tokens=plan.max_tokens,
        close_text=fmt.think_close.encode(),
        open_text=fmt.think_open.encode(),
    )
