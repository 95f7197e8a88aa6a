"""Pure scheduling policy: the waiting queue, the running sequences and the plan of each engine step.

No llama_cpp, no asyncio, no threads (ARCHITECTURE.md, convention 7). The loop feeds it requests and
sampled tokens; it answers with memory operations and the tokens to decode in the next step. Where a
request's sequences go in the KV cache is the cache's decision (kvcache.py); the scheduler never
refuses a request (engine/admission.py bounds what reaches the engine).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from qwenhost.engine.llamacpp.kvcache import CacheConfig, KvCache, PinnedPrefix, Slot
from qwenhost.engine.llamacpp.plan import BatchToken, MediaSlice, StepPlan
from qwenhost.engine.llamacpp.sequence import Group, SeqState, Sequence
from qwenhost.engine.protocol import GenerationRequest


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    num_slots: int  # sequences that may run at once
    num_pin_slots: int  # extra sequence ids for explicit-cache entries
    batch_tokens: int  # tokens per llama_decode
    max_waiting: int
    queue_timeout_s: float
    min_pin_tokens: int = 1024
    pin_ttl_s: float = 300.0
    max_pinned_tokens: int = 65536
    min_copy_tokens: int = 0  # see CacheConfig.min_copy_tokens

    def cache_config(self) -> CacheConfig:
        return CacheConfig(
            num_slots=self.num_slots,
            num_pin_slots=self.num_pin_slots,
            min_pin_tokens=self.min_pin_tokens,
            pin_ttl_s=self.pin_ttl_s,
            max_pinned_tokens=self.max_pinned_tokens,
            min_copy_tokens=self.min_copy_tokens,
        )


class Scheduler:
    def __init__(self, config: SchedulerConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.cache = KvCache(config.cache_config(), clock)
        self.waiting: deque[Group] = deque()
        self.running: list[Sequence] = []
        self.groups: dict[str, Group] = {}
        # After a preemption the KV cache is known to be full: admit nothing until a sequence finishes,
        # or the preempted request would be re-admitted into the same shortage at once (a livelock).
        self._is_kv_full = False

    @property
    def slots(self) -> list[Slot]:
        return self.cache.slots

    @property
    def pins(self) -> list[PinnedPrefix]:
        return self.cache.pins

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Group:
        """Queue a request; never refuses (engine/admission.py bounds what reaches the engine)."""
        group = Group.of(request, self.clock())
        self.waiting.append(group)
        self.groups[request.request_id] = group
        return group

    def abort(self, request_id: str) -> Group | None:
        """End a request at any stage (queued, waiting for media, prefilling, decoding): its sequences
        leave the running set and their slots are free for the next plan at once."""
        group = self.groups.pop(request_id, None)
        if group is None:
            return None
        for seq in group.seqs:
            self.finish(seq)
        if group in self.waiting:
            self.waiting.remove(group)
        return group

    def finish(self, seq: Sequence) -> None:
        if seq.state is SeqState.FINISHED:
            return
        seq.state = SeqState.FINISHED
        if seq in self.running:
            self.running.remove(seq)
            self._is_kv_full = False
        self.cache.release(seq)
        if seq.group.is_done:
            self.groups.pop(seq.group.request_id, None)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- planning ---------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        now = self.clock()
        self.cache.expire_pins(now)
        plan = StepPlan(mem_ops=self.cache.take_pending_ops())
        self._expire_waiting(now, plan)
        budget = self.config.batch_tokens
        for seq in self.running:
            if seq.state is SeqState.DECODE and budget > 0:
                budget -= self._decode_tokens(seq, budget, plan)
        if not self.running:
            self._is_kv_full = False
        while self.waiting and budget > 0 and not self._is_kv_full and self._can_admit(self.waiting[0]):
            group = self.waiting.popleft()
            self._admit(group, plan)
            plan.admitted.append(group)
        for seq in self.running:
            if budget <= 0:
                break
            if seq.state is SeqState.PREFILL and not seq.is_follower:
                budget -= self._prefill_chunk(seq, budget, plan)
        return plan

    @staticmethod
    def _decode_tokens(seq: Sequence, budget: int, plan: StepPlan) -> int:
        """The sequence's tokens not yet in the KV cache: the last sampled one, and after a grammar's
        jump-forward the tokens it forced. Logits only for the last; a run longer than the budget is
        finished next step, and the sequence samples only then."""
        start, last = seq.num_computed, len(seq.tokens) - 1
        end = min(len(seq.tokens), start + budget)
        for index in range(start, end):
            is_last = index == last
            plan.tokens.append(
                BatchToken(seq.tokens[index], seq.group.pos_at(index), (seq.slot,), is_last, seq if is_last else None)
            )
        plan.advances.append((seq, end))
        return end - start

    def _prefill_chunk(self, seq: Sequence, budget: int, plan: StepPlan) -> int:
        """Plan the next prompt cells of ``seq`` (and its followers): text first, then at most one media
        slice — its batch is decoded after the text batch, so nothing after it is planned this step."""
        start = seq.num_computed
        group = seq.group
        members = [seq]
        if seq.choice == 0 and not group.is_prompt_split:
            members = [s for s in group.seqs if s.state is SeqState.PREFILL]
        index = group.layout.span_at(start) if group.layout is not None else None
        if index is None:
            return self._text_chunk(seq, members, start, min(len(seq.tokens), start + budget), plan)
        span = group.request.media[index]
        if span.offset <= start:
            return self._media_chunk(group, index, start, min(span.end, start + budget), members, plan)
        used = self._text_chunk(seq, members, start, min(len(seq.tokens), start + budget, span.offset), plan)
        if start + used == span.offset and used < budget:
            stop = min(span.end, span.offset + budget - used)
            used += self._media_chunk(group, index, span.offset, stop, members, plan)
        return used

    @staticmethod
    def _text_chunk(seq: Sequence, members: list[Sequence], start: int, end: int, plan: StepPlan) -> int:
        seq_ids = tuple(s.slot for s in members)
        last = len(seq.tokens) - 1
        for index in range(start, end):
            is_last = index == last
            bt = BatchToken(seq.tokens[index], seq.group.pos_at(index), seq_ids, is_last, seq if is_last else None)
            plan.tokens.append(bt)
        plan.advances.extend((m, end) for m in members)
        return end - start

    def _media_chunk(
        self, group: Group, index: int, start: int, stop: int, members: list[Sequence], plan: StepPlan
    ) -> int:
        if group.media_state.get(index) != "ready":
            self._want_media(group, index, plan)
            return 0  # blocked until the encoder delivers; other sequences keep decoding
        span = group.request.media[index]
        plan.media.append(MediaSlice(group, index, start - span.offset, stop - span.offset, members))
        return stop - start

    @staticmethod
    def _want_media(group: Group, index: int, plan: StepPlan) -> None:
        if index not in group.media_state:
            group.media_state[index] = "pending"
            plan.encode.append((group, index))

    def _expire_waiting(self, now: float, plan: StepPlan) -> None:
        """Requests that waited too long for their first admission are refused (preempted ones never are)."""
        for group in [
            g for g in self.waiting if not g.was_admitted and now - g.arrived_s > self.config.queue_timeout_s
        ]:
            self.waiting.remove(group)
            for seq in group.seqs:
                seq.state = SeqState.FINISHED
            self.groups.pop(group.request_id, None)
            plan.expired.append(group)

    def _can_admit(self, group: Group) -> bool:
        return self.cache.can_place(len(group.waiting_seqs()))

    def _admit(self, group: Group, plan: StepPlan) -> None:
        seqs = group.waiting_seqs()
        placement = self.cache.place(group, seqs)
        plan.mem_ops.extend(placement.mem_ops)
        for seq in seqs:
            seq.state = SeqState.PREFILL
            seq.num_computed = placement.reuse
            self.running.append(seq)
        if placement.is_replay:
            plan.replay.append(group)
        if not group.is_prompt_reported:
            group.cached_tokens = placement.reuse
        group.was_admitted = True
        for index, span in enumerate(group.request.media):
            if span.end > placement.reuse:  # encode ahead: the encoder works while earlier cells prefill
                self._want_media(group, index, plan)

    # -- results ----------------------------------------------------------------------------------
    def on_decoded(self, plan: StepPlan) -> None:
        """Advance computed counts after a successful llama_decode of the text batch of ``plan``."""
        for seq, num_computed in plan.advances:
            if seq.state is not SeqState.FINISHED and seq.num_computed < num_computed:
                seq.num_computed = num_computed

    def on_sampled(self, seq: Sequence, tokens: list[int]) -> None:
        seq.tokens.extend(tokens)
        seq.state = SeqState.DECODE

    def preempt_one(self) -> Sequence | None:
        """Free KV by recomputing the newest running sequence later (vLLM-style recompute preemption)."""
        victims = [s for s in self.running if s.state in (SeqState.DECODE, SeqState.PREFILL)]
        if len(victims) <= 1:
            return None
        victim = max(victims, key=lambda s: (s.group.arrived_s, s.choice))
        self.running.remove(victim)
        self.cache.drop(victim)
        victim.group.is_prompt_split = True
        victim.num_computed = 0
        victim.state = SeqState.WAITING
        self._is_kv_full = True
        if victim.group not in self.waiting:
            self.waiting.appendleft(victim.group)
        return victim

    # -- media ------------------------------------------------------------------------------------
    def media_ready(self, request_id: str, index: int) -> None:
        group = self.groups.get(request_id)
        if group is not None and group.media_state.get(index) == "pending":
            group.media_state[index] = "ready"

    def on_media_decoded(self, piece: MediaSlice) -> bool:
        """Advance past a decoded media slice; True when no sequence of the group needs the span again."""
        span = piece.group.request.media[piece.index]
        for seq in piece.members:
            if seq.state is not SeqState.FINISHED:
                seq.num_computed = max(seq.num_computed, span.offset + piece.stop)
        done = all(s.state is SeqState.FINISHED or s.num_computed >= span.end for s in piece.group.seqs)
        if done:
            piece.group.media_state.pop(piece.index, None)
        return done
