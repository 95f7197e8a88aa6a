"""The engine thread: drain commands -> schedule -> decode one batch -> sample every sequence -> publish."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qwenhost.core.errors import CapacityExceeded, InternalError, ServeError
from qwenhost.core.types import CacheReport
from qwenhost.engine.llamacpp.encoder import EmbeddingStore, MediaEncoder
from qwenhost.engine.llamacpp.projector import Projector
from qwenhost.engine.llamacpp.runner import DecodeError, KvCacheFull, LlamaRunner
from qwenhost.engine.llamacpp.sampler import SequenceSampler, mask_logits, token_logprobs
from qwenhost.engine.llamacpp.scheduler import Group, MediaSlice, Scheduler, SeqState, Sequence, StepPlan
from qwenhost.engine.protocol import (
    GenerationRequest,
    PromptDone,
    StepOut,
    TokenAlternative,
    TokenConstraint,
    TokenOut,
)
from qwenhost.engine.thought import ThoughtTracker

log = logging.getLogger("qwenhost.engine")

# Delivered to the asyncio side in one call per step: (request_id, PromptDone | StepOut | ServeError).
Delivery = tuple[str, Any]
Publish = Callable[[list[Delivery]], None]


@dataclass(eq=False)
class SeqRuntime:
    """What the engine thread keeps beside a scheduler Sequence: its sampler and grammar state."""

    sampler: SequenceSampler
    constraint: TokenConstraint | None = None
    stop_ids: frozenset[int] = frozenset()
    tail: bytes = b""  # the last bytes of output, for stop strings that span tokens
    thought: ThoughtTracker | None = None  # thinking answers: budget and answer-length accounting


@dataclass
class EngineStats:
    steps: int = 0
    decoded_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    preemptions: int = 0
    step_s: float = 0.0
    media_tokens: int = 0  # media cells decoded from embeddings


class EngineLoop:
    def __init__(
        self, runner: LlamaRunner, scheduler: Scheduler, publish: Publish, projector: Projector | None = None
    ) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.publish = publish
        self.stats = EngineStats()
        self.projector = projector
        self.encoder = MediaEncoder(projector, self._media_done) if projector is not None else None
        self._embeddings = EmbeddingStore()
        self._runtime: dict[Sequence, SeqRuntime] = {}
        self._kept_logits: dict[int, np.ndarray] = {}  # slot seq id -> logits of its prompt's last token
        self._commands: deque[tuple[str, Any]] = deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="qwenhost-engine", daemon=True)

    # -- called from other threads ----------------------------------------------------------------
    def start(self) -> None:
        if self.encoder is not None:
            self.encoder.start()
        self._thread.start()

    def submit(self, request: GenerationRequest, salt: str) -> None:
        self._command("submit", (request, salt))

    def abort(self, request_id: str) -> None:
        self._command("abort", request_id)

    def cancel_all(self, error: ServeError) -> None:
        self._command("cancel_all", error)

    def stop(self) -> None:
        self._command("stop", None)
        self._thread.join(timeout=10)
        if self.encoder is not None:
            self.encoder.stop()

    def _media_done(self, key: int, array: Any) -> None:
        self._command("media", (key, array))  # from the encoder thread

    def _command(self, kind: str, payload: Any) -> None:
        with self._wake:
            self._commands.append((kind, payload))
            self._wake.notify()

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopped:
            with self._wake:
                while not self._commands and not self.scheduler.has_work():
                    self._wake.wait(timeout=1.0)
            self._drain()
            if self.scheduler.has_work():
                try:
                    progressed = self._step()
                except Exception:  # a bug must not kill the engine: fail the requests in flight instead
                    log.exception("engine step failed")
                    self._fail_all(InternalError())
                    continue
                if not progressed:  # every runnable sequence waits for the media encoder
                    with self._wake:
                        if not self._commands:
                            self._wake.wait(timeout=0.05)
        self._fail_all(InternalError("The server is shutting down."))

    def _drain(self) -> None:
        while self._commands:
            kind, payload = self._commands.popleft()
            if kind == "submit":
                request, salt = payload
                self.scheduler.submit(request, salt)
            elif kind == "abort":
                group = self.scheduler.abort(payload)
                if group is not None:
                    self._free_group(group)
            elif kind == "media":
                self._on_media(*payload)
            elif kind == "cancel_all":
                self._fail_all(payload)
            elif kind == "stop":
                self._stopped = True

    def _step(self) -> bool:
        """One schedule -> decode -> sample round; False when nothing could run (waiting for media)."""
        started = time.perf_counter()
        plan = self.scheduler.schedule()
        deliveries: list[Delivery] = []
        for group in plan.expired:
            deliveries.append((group.request_id, CapacityExceeded()))
        for group in plan.admitted:
            self._start_group(group)
        self.runner.apply(plan.mem_ops)
        for group, index in plan.encode:
            self._want_media(group, index)
        self._replay(plan, deliveries)
        if plan.tokens:
            rows = self._decode(plan)
            if rows is None:
                self.publish(deliveries)
                return True
            self.scheduler.on_decoded(plan)
            self._sample_all(plan, rows, deliveries)
            self.stats.steps += 1
            self.stats.decoded_tokens += len(plan.tokens)
        if plan.media:  # after sampling: another llama_decode overwrites the logits
            self._decode_media(plan.media)
        self.runner.apply(self.scheduler.take_pending_ops())
        self.stats.step_s += time.perf_counter() - started
        if deliveries:
            self.publish(deliveries)
        return bool(plan.tokens or plan.media or plan.admitted or plan.expired or plan.replay or deliveries)

    # -- media ------------------------------------------------------------------------------------
    def _want_media(self, group: Group, index: int) -> None:
        span = group.request.media[index]
        wanted = self._embeddings.want(span.key, (group.request_id, index))
        if wanted == "ready":
            self.scheduler.media_ready(group.request_id, index)
        elif wanted == "encode" and self.encoder is not None:
            self.encoder.submit(span)

    def _on_media(self, key: int, array: Any) -> None:
        users = self._embeddings.deliver(key, array)
        failed: list[Delivery] = []
        for request_id, index in users:
            if array is not None:
                self.scheduler.media_ready(request_id, index)
                continue
            group = self.scheduler.abort(request_id)
            if group is not None:
                self._free_group(group)
                failed.append((request_id, InternalError("The multimodal content could not be encoded.")))
        if failed:
            self.runner.apply(self.scheduler.take_pending_ops())
            self.publish(failed)

    def _decode_media(self, slices: list[MediaSlice]) -> None:
        assert self.projector is not None
        for piece in slices:
            span = piece.group.request.media[piece.index]
            rows = self._embeddings.rows(span.key, piece.start, piece.stop)
            positions = self.projector.positions(span, piece.start, piece.stop)
            try:
                self.runner.decode_embeddings(rows, positions, piece.seq_ids)
            except KvCacheFull:
                if not self.scheduler.evict_idle() and self.scheduler.preempt_one() is None:
                    self._fail_groups([piece.group], CapacityExceeded())
                return  # the rest is planned again next step
            self.stats.media_tokens += piece.stop - piece.start
            if self.scheduler.on_media_decoded(piece):
                self._embeddings.release(span.key, (piece.group.request_id, piece.index))

    def _decode(self, plan: StepPlan) -> dict[int, int] | None:
        """{plan.tokens index -> logits row}, or None when nothing of the plan was computed."""
        try:
            return self.runner.decode(plan.tokens)
        except KvCacheFull:
            # Make room and let the next schedule() plan it again.
            if self.scheduler.evict_idle():
                return None
            victim = self.scheduler.preempt_one()
            if victim is not None:
                self.stats.preemptions += 1
                return None
            # One sequence alone does not fit: fail the requests in this batch, not the queued ones.
            self._fail_groups(self._plan_groups(plan), CapacityExceeded())
            return None
        except DecodeError:
            log.exception("llama_decode failed")
            self._fail_groups(self._plan_groups(plan), InternalError())
            return None

    def _plan_groups(self, plan: StepPlan) -> list[Group]:
        groups: dict[str, Group] = {}
        slots = self.scheduler.slots
        for bt in plan.tokens:
            for seq_id in bt.seq_ids:
                owner = slots[seq_id].owner if seq_id < len(slots) else None
                if owner is not None:
                    groups[owner.group.request_id] = owner.group
        return list(groups.values())

    def _start_group(self, group: Group) -> None:
        request = group.request
        window = self.runner.context_length
        for seq in group.seqs:
            if seq in self._runtime:
                continue  # resumed after preemption: its sampler keeps its state
            params = request.sampling[seq.choice]
            constraint = request.constraint() if request.constraint is not None else None
            stop_ids = frozenset(s[0] for s in request.stop_sequences if len(s) == 1)
            budget = request.reasoning_budget
            self._runtime[seq] = SeqRuntime(
                sampler=SequenceSampler(self.runner.ctx, self.runner.n_vocab, params, request.prompt, window),
                constraint=constraint,
                stop_ids=stop_ids,
                thought=ThoughtTracker(budget) if budget is not None else None,
            )

    def _sample_all(self, plan: StepPlan, rows: dict[int, int], deliveries: list[Delivery]) -> None:
        by_request: dict[str, list[TokenOut]] = {}
        for i, bt in enumerate(plan.tokens):
            if not bt.wants_logits or bt.owner is None:
                continue
            row = rows[i]
            lead = bt.owner
            if lead.state is SeqState.FINISHED:
                continue
            if lead.state is SeqState.PREFILL:
                if not self.scheduler.prompt_done(lead):
                    continue
                targets = [lead]
                if not lead.group.is_prompt_split:  # followers sample from their leader's row
                    targets = [
                        s for s in lead.group.seqs if s.state is SeqState.PREFILL and self.scheduler.prompt_done(s)
                    ]
                self._report_prompt(lead.group, deliveries)
                self._keep_prompt_logits(lead, row)
            else:
                targets = [lead]
            raw = None
            for seq in targets:
                if len(targets) > 1 and self._runtime[seq].constraint is not None:
                    raw = raw if raw is not None else self.runner.logits(row).copy()
                    self.runner.logits(row)[:] = raw
                out = self._sample_one(seq, row)
                by_request.setdefault(seq.group.request_id, []).append(out)
        for request_id, tokens in by_request.items():
            deliveries.append((request_id, StepOut(tuple(tokens))))

    def _keep_prompt_logits(self, lead: Sequence, row: int) -> None:
        if lead.group.request.media or lead.group.request.cache_pins:
            return
        self._kept_logits[lead.slot] = self.runner.logits(row).copy()
        self.scheduler.note_prompt_logits(lead)

    def _replay(self, plan: StepPlan, deliveries: list[Delivery]) -> None:
        """Groups whose whole prompt was reused: their first tokens come from the kept logits."""
        for group in plan.replay:
            stored = self._kept_logits.get(group.seqs[0].slot)
            if stored is None:  # cannot happen while the scheduler and the engine agree; fail loudly
                raise RuntimeError(f"no kept logits for slot {group.seqs[0].slot}")
            self._report_prompt(group, deliveries)
            outs = [self._sample_one(seq, -1, stored) for seq in group.seqs if seq.state is SeqState.PREFILL]
            deliveries.append((group.request_id, StepOut(tuple(outs))))

    def _report_prompt(self, group: Group, deliveries: list[Delivery]) -> None:
        if group.is_prompt_reported:
            return
        group.is_prompt_reported = True
        created = self.scheduler.pin_prefixes(group) if group.request.cache_pins else 0
        report = CacheReport(
            cached_tokens=group.cached_tokens, cache_creation_tokens=created, is_explicit=bool(group.request.cache_pins)
        )
        self.stats.prompt_tokens += len(group.request.prompt)
        self.stats.cached_tokens += group.cached_tokens
        deliveries.append((group.request_id, PromptDone(len(group.request.prompt), report)))

    def _sample_one(self, seq: Sequence, row: int, stored: np.ndarray | None = None) -> TokenOut:
        """Sample ``seq``'s next token from logits row ``row`` of the last decode, or from ``stored``: the
        logits kept for an identical prompt whose KV is reused whole (see Scheduler._best_source)."""
        rt = self._runtime[seq]
        request = seq.group.request
        wants_logprobs = request.top_logprobs is not None
        logits: np.ndarray | None = None
        if stored is not None:
            logits = stored.copy() if rt.constraint is not None else stored  # the cache itself stays intact
        elif wants_logprobs or rt.constraint is not None:
            logits = self.runner.logits(row)
        raw = logits.copy() if (wants_logprobs and logits is not None and rt.constraint is not None) else logits
        if seq.forced:
            token = seq.forced.popleft()
            rt.sampler.accept(token)
        else:
            forced: list[int] = []
            if rt.constraint is not None and logits is not None:
                # A token the grammar forces needs no mask (one token per step; the rest follow).
                forced = rt.constraint.forced_tokens()
                if not forced:
                    allowed = rt.constraint.allowed_tokens()
                    if allowed is not None:
                        mask_logits(logits, allowed)
            if forced:
                token = forced[0]
                rt.sampler.accept(token)
            elif stored is not None and logits is not None:
                token = rt.sampler.sample_array(logits)
            else:
                token = rt.sampler.sample(row)
        if rt.constraint is not None:
            rt.constraint.consume(token)
        logprob: float | None = None
        top: tuple[TokenAlternative, ...] = ()
        if wants_logprobs and raw is not None:
            logprob, alternatives = token_logprobs(raw, token, request.top_logprobs or 0)
            top = tuple(TokenAlternative(t, self.runner.pieces[t], lp) for t, lp in alternatives)
        self.scheduler.on_sampled(seq, token)
        finish, is_end = self._check_finish(seq, rt, token)
        if finish is not None:
            self.scheduler.finish(seq, finish)
            self._free_seq(seq)
            if request.media and seq.group.is_done:
                self._release_media(seq.group)
        return TokenOut(
            choice=seq.choice,
            token_id=token,
            piece=b"" if is_end else self.runner.pieces[token],
            finish=finish,  # type: ignore[arg-type]
            is_end=is_end,
            logprob=logprob,
            top=top,
        )

    def _check_finish(self, seq: Sequence, rt: SeqRuntime, token: int) -> tuple[str | None, bool]:
        if token in self.runner.eog or token in rt.stop_ids:
            return "stop", True
        stops = seq.group.request.stop_strings
        if stops:
            piece = self.runner.pieces[token]
            rt.tail = (rt.tail + piece)[-(len(piece) + max(len(s) for s in stops)) :]
            if any(s in rt.tail for s in stops):
                return "stop", False
        if rt.constraint is not None and rt.constraint.is_finished():
            return "stop", False
        if rt.thought is not None:
            # thinking_budget: once the thought has used it, the close tag is forced (spec §1.3 #21).
            seq.forced.extend(rt.thought.on_token(token, self.runner.pieces[token]))
            if rt.thought.is_answer_done:
                return "length", False
        if seq.num_generated >= seq.max_new:
            return "length", False
        return None, False

    def _free_seq(self, seq: Sequence) -> None:
        rt = self._runtime.pop(seq, None)
        if rt is not None:
            rt.sampler.free()

    def _free_group(self, group: Group) -> None:
        for seq in group.seqs:
            self._free_seq(seq)
        self._release_media(group)

    def _release_media(self, group: Group) -> None:
        for index, span in enumerate(group.request.media):
            self._embeddings.release(span.key, (group.request_id, index))

    def _fail_all(self, error: ServeError) -> None:
        self._fail_groups(list(self.scheduler.groups.values()), error)

    def _fail_groups(self, groups: list[Group], error: ServeError) -> None:
        deliveries: list[Delivery] = []
        for group in groups:
            if self.scheduler.abort(group.request_id) is not None:
                self._free_group(group)
                deliveries.append((group.request_id, error))
        self.runner.apply(self.scheduler.take_pending_ops())
        if deliveries:
            self.publish(deliveries)
