"""Everything the engine thread does, synchronously and inside fault boundaries: commands and steps.

A failure fails only the requests it concerns, with the DashScope envelope, and the executor goes on:
an exception while sampling one sequence fails that sequence's request; a failing llama_decode fails
the requests in its batch; a failing command fails the request it names. The loop (loop.py) adds
the thread, the inbox and the watchdog; what the executor produces waits in ``outbox``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np

from qwenhost.core.errors import CapacityExceeded, InternalError, ServeError
from qwenhost.core.types import CacheReport
from qwenhost.engine.llamacpp.commands import Abort, CancelAll, Command, Delivery, MediaDone, Submit
from qwenhost.engine.llamacpp.decoder import DEFAULT_LOOP_GUARD, LoopGuard, SamplerFactory, SequenceDecoder, Vocabulary
from qwenhost.engine.llamacpp.encoder import MediaFeed
from qwenhost.engine.llamacpp.plan import BatchToken, MediaSlice, MemOp, StepPlan
from qwenhost.engine.llamacpp.runner import KvCacheFull
from qwenhost.engine.llamacpp.scheduler import Scheduler
from qwenhost.engine.llamacpp.sequence import Group, SeqState, Sequence
from qwenhost.engine.protocol import PromptDone, StepOut, TokenOut

log = logging.getLogger("qwenhost.engine")
MEDIA_ENCODE_FAILED = "The multimodal content could not be encoded."


class Runner(Vocabulary, Protocol):
    """What the executor asks of the model context (runner.LlamaRunner; fakes in the tests)."""

    def decode(self, tokens: list[BatchToken]) -> dict[int, int]:
        """{index in ``tokens`` -> logits row}; raises KvCacheFull when the cache has no room."""

    def decode_embeddings(self, embd: np.ndarray, positions: np.ndarray, seq_ids: tuple[int, ...]) -> None: ...

    def apply(self, ops: Iterable[MemOp]) -> list[int]:
        """Apply ``ops``; returns the sequence ids an explicit-cache entry could not be restored into."""
        ...


@dataclass
class EngineStats:
    steps: int = 0
    decoded_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    preemptions: int = 0
    step_s: float = 0.0
    media_tokens: int = 0  # media cells decoded from embeddings
    faults: int = 0  # failures caught by a fault boundary (each failed at most the requests it concerned)


class EngineExecutor:
    def __init__(
        self,
        runner: Runner,
        scheduler: Scheduler,
        make_sampler: SamplerFactory,
        media: MediaFeed | None = None,
        loop_guard: LoopGuard = DEFAULT_LOOP_GUARD,
    ) -> None:
        self.runner = runner
        self.loop_guard = loop_guard
        self.scheduler = scheduler
        self.make_sampler = make_sampler
        self.media = media
        self.stats = EngineStats()
        self.outbox: list[Delivery] = []
        self._decoders: dict[Sequence, SequenceDecoder] = {}
        self._kept_logits: dict[int, np.ndarray] = {}  # slot seq id -> logits of its prompt's last token
        self._failed: set[str] = set()  # requests failed since the outbox was last taken

    def take_outbox(self) -> list[Delivery]:
        out, self.outbox = self.outbox, []
        if self._failed:  # an error is a request's last word: drop what was queued for it beside the error
            out = [d for d in out if d.is_error or d.request_id not in self._failed]
            self._failed.clear()
        return out

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # -- commands ---------------------------------------------------------------------------------
    def handle(self, command: Command) -> None:
        """Apply one command; a failure fails the requests it names and nothing else."""
        try:
            match command:
                case Submit(request):
                    self.scheduler.submit(request)
                case Abort(request_id):
                    group = self.scheduler.abort(request_id)
                    if group is not None:
                        self._free_group(group)
                case MediaDone(key, array):
                    self._on_media(key, array)
                case CancelAll(error):
                    self.fail_all(error)
                # Stop never reaches here: the loop handles it and fails what is left itself.
        except Exception:
            self._fault([], f"engine command {type(command).__name__}")
            self._fail_command(command)

    def _fail_command(self, command: Command) -> None:
        match command:
            case Submit(request):
                self.fail_request(request.request_id, InternalError())
            case Abort(request_id):
                self.fail_request(request_id, InternalError())
            case MediaDone(key):
                for group in [g for g in self.scheduler.groups.values() if any(s.key == key for s in g.request.media)]:
                    self.fail(group, InternalError(MEDIA_ENCODE_FAILED))
            case CancelAll(error):
                self.fail_all(error)

    # -- failures ---------------------------------------------------------------------------------
    def fail_request(self, request_id: str, error: ServeError) -> None:
        """Fail a request by id, even one the scheduler never registered (its Submit failed)."""
        group = self.scheduler.groups.get(request_id)
        if group is not None:
            self.fail(group, error)
        elif request_id not in self._failed:
            self._failed.add(request_id)
            self.outbox.append(Delivery(request_id, error))

    def fail(self, group: Group, error: ServeError, *, is_kv_suspect: bool = False) -> None:
        """End ``group`` with ``error`` as its last delivery. ``is_kv_suspect``: the failure may have left
        its cells half-written, so they are dropped instead of kept as a cached prefix."""
        if self.scheduler.abort(group.request_id) is None:
            return  # already ended: its last delivery was sent
        self._free_group(group)
        if is_kv_suspect:
            for seq in group.seqs:
                self.scheduler.cache.forget(seq.slot)
        self._failed.add(group.request_id)
        self.outbox.append(Delivery(group.request_id, error))

    def fail_all(self, error: ServeError) -> None:
        for group in list(self.scheduler.groups.values()):
            self.fail(group, error)

    def _free_seq(self, seq: Sequence) -> None:
        decoder = self._decoders.pop(seq, None)
        if decoder is not None:
            decoder.free()

    def _free_group(self, group: Group) -> None:
        for seq in group.seqs:
            self._free_seq(seq)
        if self.media is not None:
            self.media.release(group)

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> bool:
        """One schedule -> decode -> sample round; False when nothing could run (waiting for media)."""
        started = time.perf_counter()
        plan = self.scheduler.schedule()
        try:
            progressed = self._run(plan)
        except Exception:  # a bug outside the finer boundaries: the requests of this step pay, no others
            self._fault(plan.groups(), "engine step")
            progressed = True
        self.stats.step_s += time.perf_counter() - started
        return progressed

    def _run(self, plan: StepPlan) -> bool:
        for group in plan.expired:
            self.fail_request(group.request_id, CapacityExceeded())
        for group in plan.admitted:
            self._guard(group, self._start_group)
        self._apply(plan.mem_ops)
        for group, index in plan.encode:
            self._guard(group, partial(self._want_media, index=index))
        for group in plan.replay:
            self._guard(group, self._replay)
        if plan.tokens:
            rows = self._decode(plan)
            if rows is None:
                return True
            self.scheduler.on_decoded(plan)
            self._sample_all(plan, rows)
            self.stats.steps += 1
            self.stats.decoded_tokens += len(plan.tokens)
        if plan.media:  # after sampling: another llama_decode overwrites the logits
            self._decode_media(plan.media)
        self._apply(self.scheduler.cache.take_pending_ops())
        return bool(plan.tokens or plan.media or plan.admitted or plan.expired or plan.replay or self.outbox)

    def _apply(self, ops: list[MemOp]) -> None:
        """Memory operations; a sequence whose explicit-cache entry found no room (the unified layout, full)
        would hold less than the scheduler believes: its request fails, the others go on."""
        for seq_id in self.runner.apply(ops):
            for group in [g for g in self.scheduler.groups.values() if any(s.slot == seq_id for s in g.seqs)]:
                log.warning("request %s: no KV cells to restore its explicit-cache entry", group.request_id)
                self.fail(group, CapacityExceeded(), is_kv_suspect=True)

    def _guard(self, group: Group, work: Callable[[Group], None]) -> None:
        """Run ``work(group)``; an exception fails ``group`` only."""
        if group.is_done:
            return  # failed earlier in this step
        try:
            work(group)
        except Exception:
            self._fault([group], f"engine work for request {group.request_id}")

    def _start_group(self, group: Group) -> None:
        request = group.request
        for seq in group.seqs:
            if seq not in self._decoders:  # a resumed sequence keeps its decoder (sampler state)
                sampler = self.make_sampler(request.sampling[seq.choice], request.prompt)
                self._decoders[seq] = SequenceDecoder(request, seq.choice, sampler, self.runner, self.loop_guard)

    def _decode(self, plan: StepPlan) -> dict[int, int] | None:
        """{plan.tokens index -> logits row}, or None when nothing of the plan was computed."""
        try:
            return self.runner.decode(plan.tokens)
        except KvCacheFull:
            if not self._make_room():  # one sequence alone does not fit: this batch fails, not the queue
                for group in plan.batch_groups():
                    self.fail(group, CapacityExceeded())
            return None  # the next schedule() plans it again
        except Exception:
            self._fault(plan.batch_groups(), "llama_decode")
            return None

    def _make_room(self) -> bool:
        """After KvCacheFull: drop an idle cached prefix, else preempt a running sequence; False if neither."""
        if self.scheduler.cache.evict_idle():
            return True
        if self.scheduler.preempt_one() is not None:
            self.stats.preemptions += 1
            return True
        return False

    def _fault(self, groups: Iterable[Group], what: str, *, is_kv_suspect: bool = True) -> None:
        """A failure caught by a boundary: count it, log it, and fail only ``groups``."""
        self.stats.faults += 1
        log.exception("%s failed", what)
        for group in list(groups):
            self.fail(group, InternalError(), is_kv_suspect=is_kv_suspect)

    # -- sampling ---------------------------------------------------------------------------------
    def _sample_all(self, plan: StepPlan, rows: dict[int, int]) -> None:
        by_request: dict[str, list[TokenOut]] = {}
        for i, bt in enumerate(plan.tokens):
            lead = bt.owner
            if lead is None or not bt.wants_logits or lead.state is SeqState.FINISHED:
                continue
            row = rows[i]
            targets = [lead]
            if lead.state is SeqState.PREFILL:
                if not lead.is_prompt_computed:
                    continue
                if not lead.group.is_prompt_split:  # followers sample from their leader's row
                    targets = [s for s in lead.group.seqs if s.is_prompt_computed]
                try:
                    self._on_prompt_computed(lead, row)
                except Exception:
                    self._sampling_failed(lead)
                    continue
            self._sample_row(targets, row, by_request)
        for request_id, tokens in by_request.items():
            self.outbox.append(Delivery(request_id, StepOut(tuple(tokens))))

    def _sample_row(self, targets: list[Sequence], row: int, by_request: dict[str, list[TokenOut]]) -> None:
        """Sample each of ``targets`` (one sequence, or a leader and its followers) from one row."""
        raw: np.ndarray | None = None
        for seq in targets:
            try:
                if len(targets) > 1 and self._decoders[seq].constraint is not None:
                    # A grammar masks the shared row in place: each follower starts from the raw row.
                    raw = raw if raw is not None else self.runner.logits(row).copy()
                    self.runner.logits(row)[:] = raw
                outs = self._sample_one(seq, row)
            except Exception:
                self._sampling_failed(seq)
                return  # the other targets belong to the same request, which has just failed
            by_request.setdefault(seq.group.request_id, []).extend(outs)

    def _sampling_failed(self, seq: Sequence) -> None:
        self._fault([seq.group], f"sampling for request {seq.group.request_id}", is_kv_suspect=False)

    def _sample_one(self, seq: Sequence, row: int, stored: np.ndarray | None = None) -> list[TokenOut]:
        """The sampled token and any the grammar forces after it (decoder.py's jump-forward)."""
        outs = self._decoders[seq].next_tokens(row, stored)
        self.scheduler.on_sampled(seq, [out.token_id for out in outs])
        if outs[-1].finish is not None:
            self.scheduler.finish(seq)
            self._free_seq(seq)
            if self.media is not None and seq.group.is_done:
                self.media.release(seq.group)
        return outs

    def _on_prompt_computed(self, lead: Sequence, row: int) -> None:
        self._report_prompt(lead.group)
        if lead.group.request.media or lead.group.request.cache_pins:
            return
        self._kept_logits[lead.slot] = self.runner.logits(row).copy()
        self.scheduler.cache.note_prompt_logits(lead)

    def _replay(self, group: Group) -> None:
        """A group whose whole prompt was reused: its first tokens come from the kept logits."""
        stored = self._kept_logits.get(group.seqs[0].slot)
        if stored is None:  # cannot happen while the scheduler and the engine agree; fail loudly
            raise RuntimeError(f"no kept logits for slot {group.seqs[0].slot}")
        self._report_prompt(group)
        outs = [out for seq in group.seqs if seq.state is SeqState.PREFILL for out in self._sample_one(seq, -1, stored)]
        self.outbox.append(Delivery(group.request_id, StepOut(tuple(outs))))

    def _report_prompt(self, group: Group) -> None:
        if group.is_prompt_reported:
            return
        group.is_prompt_reported = True
        created = self.scheduler.cache.pin_prefixes(group) if group.request.cache_pins else 0
        is_explicit = bool(group.request.cache_pins)
        report = CacheReport(cached_tokens=group.cached_tokens, cache_creation_tokens=created, is_explicit=is_explicit)
        self.stats.prompt_tokens += len(group.request.prompt)
        self.stats.cached_tokens += group.cached_tokens
        self.outbox.append(Delivery(group.request_id, PromptDone(len(group.request.prompt), report)))

    # -- media ------------------------------------------------------------------------------------
    def _want_media(self, group: Group, *, index: int) -> None:
        if self.media is None:
            raise RuntimeError("a media span reached an engine without a projector")
        if self.media.want(group, index):
            self.scheduler.media_ready(group.request_id, index)

    def _on_media(self, key: int, array: np.ndarray | None) -> None:
        if self.media is None:
            return
        for request_id, index in self.media.deliver(key, array):
            if array is not None:
                self.scheduler.media_ready(request_id, index)
                continue
            group = self.scheduler.groups.get(request_id)
            if group is not None:
                self.fail(group, InternalError(MEDIA_ENCODE_FAILED))

    def _decode_media(self, slices: list[MediaSlice]) -> None:
        assert self.media is not None  # the scheduler plans slices only for spans the feed delivered
        for piece in slices:
            if piece.group.is_done:
                continue
            try:
                rows, positions = self.media.slice_input(piece)
                self.runner.decode_embeddings(rows, positions, piece.seq_ids)
            except KvCacheFull:
                if not self._make_room():
                    self.fail(piece.group, CapacityExceeded())
                return  # the rest is planned again next step
            except Exception:
                self._fault([piece.group], f"decoding media for request {piece.group.request_id}")
                continue
            self.stats.media_tokens += piece.stop - piece.start
            if self.scheduler.on_media_decoded(piece):
                self.media.release_span(piece.group, piece.index)
