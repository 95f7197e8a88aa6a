"""The single chat pipeline: prepare(request) -> Job (every request-level error raised here, before any
byte is sent) and run(job) -> ChatEvents. Streaming and non-streaming both come from run()."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from qwenhost.core import ids
from qwenhost.core.errors import InvalidParameter, NotSupported
from qwenhost.core.events import ChatEvent, RoleStart, UsageReport
from qwenhost.core.types import CacheReport, ChatRequest, SamplingParams, Usage
from qwenhost.engine.protocol import GenerationRequest, MediaSpan, PromptDone, Reservation, StepOut
from qwenhost.media.policy import MediaPolicy
from qwenhost.parsing.base import OutputParser
from qwenhost.service import structured
from qwenhost.service.media import DecodedPart, MediaPipeline
from qwenhost.service.mmprompt import MediaPromptBuilder, with_sentinels
from qwenhost.service.models import ModelRegistry, ServedModel
from qwenhost.service.output import ChoicePipeline
from qwenhost.service.prompt import RenderedPrompt
from qwenhost.service.thinking import ThinkingPlan, engine_budget, plan_thinking
from qwenhost.service.turn import ThoughtState, build_turn, turn_parser

SEED_MODULUS = 2**31


@dataclass
class Job:
    request: ChatRequest
    model: ServedModel
    prompt: RenderedPrompt
    generation: GenerationRequest
    stop_strings: tuple[str, ...]
    request_id: str
    created: int
    is_thinking: bool = False
    thought: ThoughtState = "closed"  # where the prompt leaves the thought (service/turn.py)
    deadline_s: float | None = None
    reservation: Reservation | None = None  # released when run() ends, or by close() if it never runs
    usage: Usage | None = field(default=None)
    modal_tokens: dict[str, int] = field(default_factory=dict)  # image/video/audio prompt tokens

    def close(self) -> None:
        """Give the engine's room back (idempotent): for a job that is dropped before or after run()."""
        if self.reservation is not None:
            self.reservation.release()

    @property
    def completion_id(self) -> str:
        return ids.completion_id(self.request_id)

    @property
    def model_name(self) -> str:
        return self.request.model  # the response echoes the requested name (alias or not)


class ChatService:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        request_timeout_s: float = 300.0,
        cache_isolation: bool = False,
        media: MediaPipeline | None = None,
    ) -> None:
        self.registry = registry
        self.request_timeout_s = request_timeout_s
        self.cache_isolation = cache_isolation
        self.media = media or MediaPipeline(MediaPolicy())

    # -- prepare ----------------------------------------------------------------------------------
    async def aprepare(
        self, request: ChatRequest, *, request_id: str, key_id: str | None = None, inject_fault: bool = False
    ) -> Job:
        """prepare(), after fetching and decoding the request's media (if any) off the event loop."""
        if not any(m.media for m in request.messages):
            return self.prepare(request, request_id=request_id, key_id=key_id, inject_fault=inject_fault)
        model = self.registry.resolve(request.model)
        self._refuse_unsupported(request, model)
        decoded = await self.media.decode(request, model)
        return await asyncio.to_thread(
            self.prepare, request, request_id=request_id, key_id=key_id, media=decoded, inject_fault=inject_fault
        )

    def prepare(
        self,
        request: ChatRequest,
        *,
        request_id: str,
        key_id: str | None = None,
        media: list[DecodedPart] | None = None,
        inject_fault: bool = False,
    ) -> Job:
        model = self.registry.resolve(request.model)
        thinking = plan_thinking(request, model)  # thinking errors first: they name the fix (enable_thinking)
        self._refuse_unsupported(request, model)
        is_thinking = thinking.is_thinking
        structured.check_request(request)
        prompt, thought = self._prompt(request, model, thinking)
        spans: tuple[MediaSpan, ...] = ()
        modal: dict[str, int] = {}
        if media is not None:  # ---- multimodal: media laid out in the rendered prompt (service/mmprompt.py)
            built = MediaPromptBuilder(model).build(prompt.text, media)
            first = built.media[0].offset if built.media else len(built.tokens)
            pins = tuple(p for p in prompt.cache_pins if p <= first)  # markers after media: not pinned (docs)
            prompt = replace(prompt, tokens=built.tokens, cache_pins=pins)
            spans, modal = built.media, built.modal_tokens
            self._check_input_length(request, model, len(prompt.tokens))
        # A thinking answer is followed by the engine: max_tokens then bounds only the answer (spec §1.3 #14).
        follows_thought = is_thinking and thought != "closed"
        max_new = self._max_new_tokens(request, model, len(prompt.tokens), answer_only=follows_thought)
        budget = None
        if follows_thought:
            budget = engine_budget(model, thinking, thought == "inside", request.max_tokens)
        stop_strings = self._stop_strings(request, model)
        generation = GenerationRequest(
            request_id=request_id,
            prompt=prompt.tokens,
            sampling=self._sampling(request, model, is_thinking),
            max_new_tokens=max_new,
            stop_sequences=tuple(s for s in request.stop.token_sequences if len(s) == 1),
            stop_strings=tuple(s.encode("utf-8") for s in stop_strings),
            top_logprobs=request.top_logprobs if request.logprobs else None,
            cache_pins=prompt.cache_pins,
            cache_salt=(key_id or "") if self.cache_isolation else "",
            inject_fault=inject_fault,
            media=spans,
            reasoning_budget=budget,
            constraint=structured.constraint_for(
                request, model, request.messages[-1].text() if request.is_partial else None
            ),
        )
        reservation = model.backend.reserve(request.n)
        return Job(
            request=request,
            model=model,
            prompt=prompt,
            generation=generation,
            stop_strings=stop_strings,
            request_id=request_id,
            created=int(time.time()),
            is_thinking=is_thinking,
            thought=thought,
            deadline_s=None if request.stream else time.monotonic() + self.request_timeout_s,
            reservation=reservation,
            modal_tokens=modal,
        )

    def _refuse_unsupported(self, request: ChatRequest, model: ServedModel) -> None:
        """Parameters whose feature is not built yet are refused clearly, never silently ignored."""
        if any(m.media for m in request.messages):
            self.media.check_supported(request, model)  # text-only models: a clear 400, not a crash
        if request.enable_search:
            raise NotSupported("This model does not support enable_search.")
        if request.enable_code_interpreter:
            raise NotSupported("This model does not support enable_code_interpreter.")
        if "audio" in request.modalities or request.audio_output is not None:
            raise NotSupported("This model does not support audio output.")
        if request.translation_options is not None:
            raise NotSupported("This model does not support translation_options.")

    def _prompt(
        self, request: ChatRequest, model: ServedModel, thinking: ThinkingPlan
    ) -> tuple[RenderedPrompt, ThoughtState]:
        # Partial mode and the thinking tail live in build_turn; media parts become sentinels (mmprompt.py).
        turn = build_turn(request, model, thinking, messages=with_sentinels(request.messages))
        self._check_input_length(request, model, len(turn.prompt.tokens))
        return turn.prompt, turn.thought

    def _check_input_length(self, request: ChatRequest, model: ServedModel, num_tokens: int) -> None:
        limit = model.max_input_tokens
        if request.max_input_tokens is not None:
            limit = max(1, min(limit, request.max_input_tokens))
        if not 1 <= num_tokens <= limit:
            raise InvalidParameter(f"Range of input length should be [1, {limit}]")

    def _max_new_tokens(self, request: ChatRequest, model: ServedModel, num_prompt: int, *, answer_only: bool) -> int:
        cap = model.max_output_tokens
        for name, value in (
            ("max_tokens", request.max_tokens),
            ("max_completion_tokens", request.max_completion_tokens),
        ):
            if value is not None and not 1 <= value <= cap:
                raise InvalidParameter(f"Range of {name} should be [1, {cap}]")
        answer_cap = None if answer_only else request.max_tokens  # else the engine bounds the answer alone
        wanted = min(v for v in (answer_cap, request.max_completion_tokens, cap) if v is not None)
        return max(1, min(wanted, model.context_length - num_prompt))

    def _stop_strings(self, request: ChatRequest, model: ServedModel) -> tuple[str, ...]:
        strings = list(request.stop.strings) + list(model.format.stop_strings)
        for seq in request.stop.token_sequences:
            if len(seq) > 1:  # single ids stop in the engine; longer id sequences are matched as their text
                text = model.backend.tokenizer.detokenize(list(seq)).decode("utf-8", errors="replace")
                if text:
                    strings.append(text)
        return tuple(dict.fromkeys(strings))

    def _sampling(self, request: ChatRequest, model: ServedModel, is_thinking: bool) -> tuple[SamplingParams, ...]:
        base = request.sampling.resolve(model.sampling_defaults(is_thinking))
        bias = dict(request.logit_bias)
        for token in model.backend.info.end_tokens if request.ignore_eos else ():
            bias[token] = float("-inf")
        vocab = model.backend.info.n_vocab
        if any(not 0 <= t < vocab for t in bias):
            raise InvalidParameter(f"logit_bias token ids should be in [0, {vocab - 1}]")
        out = []
        for choice in range(request.n):
            seed = base.seed
            if seed is not None and choice > 0:
                seed = (seed + choice) % SEED_MODULUS  # n choices are independent samples (spec §4.5)
            out.append(
                SamplingParams(
                    temperature=base.temperature,
                    top_p=base.top_p,
                    top_k=base.top_k,
                    presence_penalty=base.presence_penalty,
                    frequency_penalty=base.frequency_penalty,
                    repetition_penalty=base.repetition_penalty,
                    seed=seed,
                    logit_bias=tuple(bias.items()),
                )
            )
        return tuple(out)

    def make_parser(self, job: Job, choice: int) -> OutputParser:
        answer = structured.answer_parser(job.request, job.model, choice)
        return turn_parser(answer, job.model.format, job.thought, choice)

    # -- run --------------------------------------------------------------------------------------
    async def run(self, job: Job) -> AsyncIterator[ChatEvent]:
        """Generate; the first event arrives only after the prompt is processed, so queueing errors
        (503 after the queue timeout) can still be answered with an HTTP status."""
        pipelines = [
            ChoicePipeline(i, self.make_parser(job, i), job.stop_strings, logprobs=job.request.logprobs)
            for i in range(job.request.n)
        ]
        cache = CacheReport()
        assert job.reservation is not None, "a job is run once"
        stream = job.model.backend.generate(job.generation, job.reservation)
        try:
            while not all(p.is_done for p in pipelines):
                try:
                    out = await self._next(stream, job.deadline_s)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    for p in pipelines:
                        for event in p.truncate():
                            yield event
                    break
                if isinstance(out, PromptDone):
                    cache = out.cache
                    for p in pipelines:
                        yield RoleStart(p.choice, is_thinking=job.is_thinking)
                elif isinstance(out, StepOut):
                    for token in out.tokens:
                        for event in pipelines[token.choice].feed(token):
                            yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        usage = Usage(
            prompt_tokens=len(job.prompt.tokens),
            completion_tokens=sum(p.completion_tokens for p in pipelines),
            cache=cache,
            reasoning_tokens=sum(p.reasoning_tokens for p in pipelines) if job.is_thinking else None,
            **_modal_usage(len(job.prompt.tokens), job.modal_tokens),
        )
        job.usage = usage
        yield UsageReport(usage)

    @staticmethod
    async def _next(stream: AsyncIterator[object], deadline_s: float | None) -> object:
        if deadline_s is None:
            return await anext(stream)
        remaining = deadline_s - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return await asyncio.wait_for(anext(stream), remaining)


def _modal_usage(prompt_tokens: int, modal: dict[str, int]) -> dict[str, int]:
    """prompt_tokens_details per modality (spec §2.2); text_tokens is the rest of the prompt."""
    if not modal:
        return {}
    out = {f"{kind}_tokens": n for kind, n in modal.items()}
    out["text_tokens"] = prompt_tokens - sum(modal.values())
    return out
