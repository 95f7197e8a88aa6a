"""Pure scheduling policy: admission, KV-slot assignment with prefix reuse, and per-step batch plans.

No llama_cpp, no asyncio, no threads (ARCHITECTURE.md, convention 7). The loop feeds it requests and
sampled tokens; it answers with memory operations and the tokens to decode in the next step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from qwenhost.engine.llamacpp.layout import PromptLayout
from qwenhost.engine.protocol import GenerationRequest


class SeqState(Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One choice of one request: the tokens it holds and where they live in the KV cache."""

    group: Group
    choice: int
    tokens: list[int]
    num_prompt: int
    max_new: int
    slot: int = -1
    num_computed: int = 0
    state: SeqState = SeqState.WAITING
    finish: str | None = None
    forced: deque[int] = field(default_factory=deque)  # tokens the loop emits next without sampling

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.num_prompt

    @property
    def is_follower(self) -> bool:
        """Followers share the leader's prompt prefill (n > 1) and wait for its last logits row."""
        return self.choice > 0 and not self.group.is_prompt_split


@dataclass(eq=False)
class Group:
    """A request: n sequences that share one prompt."""

    request: GenerationRequest
    arrived_s: float
    seqs: list[Sequence] = field(default_factory=list)
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    is_prompt_split: bool = False  # after a preemption the choices prefill on their own
    is_prompt_reported: bool = False
    was_admitted: bool = False
    salt: str = ""
    layout: PromptLayout | None = None  # only for prompts with media spans
    media_state: dict[int, str] = field(default_factory=dict)  # span index -> "pending" | "ready"

    def pos_at(self, index: int) -> int:
        return index if self.layout is None else self.layout.pos_at(index)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def is_done(self) -> bool:
        return all(s.state is SeqState.FINISHED for s in self.seqs)


@dataclass(slots=True)
class Slot:
    """A llama.cpp sequence id and the tokens its KV cells hold (kept after use as an implicit cache)."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    owner: Sequence | None = None
    last_used_s: float = 0.0
    salt: str = ""
    # The engine keeps the logits of position logits_for - 1 (0: none), so a request with exactly the
    # prompt tokens[:logits_for] reuses every cell and samples from the kept row: same numbers as the
    # first time (a recomputed last token can differ in floating point, ggml picks kernels by batch shape).
    logits_for: int = 0


@dataclass(slots=True)
class PinnedPrefix:
    """An explicit cache entry (spec §4.2): a prefix kept in its own sequence id until it expires."""

    seq_id: int
    tokens: list[int]
    salt: str
    expires_s: float


@dataclass(frozen=True, slots=True)
class MemOp:
    """``rm``: drop positions [p0, p1) of ``dst``; ``cp``: give ``dst`` the cells [p0, p1) of ``src``."""

    kind: str
    dst: int
    src: int = -1
    p0: int = 0
    p1: int = -1


@dataclass(slots=True)
class BatchToken:
    token: int
    pos: int
    seq_ids: tuple[int, ...]
    wants_logits: bool
    owner: Sequence | None = None  # the sequence that samples from this row (leaders sample for followers)


@dataclass(slots=True)
class MediaSlice:
    """Rows [start, stop) of span ``index``'s embeddings, decoded in their own batch after the text batch."""

    group: Group
    index: int
    start: int
    stop: int
    members: list[Sequence]

    @property
    def seq_ids(self) -> tuple[int, ...]:
        return tuple(s.slot for s in self.members)


@dataclass(slots=True)
class StepPlan:
    mem_ops: list[MemOp] = field(default_factory=list)
    tokens: list[BatchToken] = field(default_factory=list)
    admitted: list[Group] = field(default_factory=list)
    expired: list[Group] = field(default_factory=list)
    advances: list[tuple[Sequence, int]] = field(default_factory=list)  # num_computed after the text batch
    media: list[MediaSlice] = field(default_factory=list)
    replay: list[Group] = field(default_factory=list)  # whole prompt reused: sample from kept logits
    encode: list[tuple[Group, int]] = field(default_factory=list)  # spans whose embeddings are wanted

    @property
    def is_empty(self) -> bool:
        return not self.tokens and not self.mem_ops and not self.media


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
    # A cached prefix held by another sequence is copied only from this length on. Split KV streams
    # copy whole (a full context of cells), which beats recomputing only for long prefixes; 256 is
    # also DashScope's implicit-cache minimum. Unified caches share cells for free: 0.
    min_copy_tokens: int = 0


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Binary search over slice equality: each comparison runs in C, so long prompts stay cheap."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class Scheduler:
    def __init__(self, config: SchedulerConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.slots = [Slot(seq_id=i) for i in range(config.num_slots)]
        self.free_pin_ids = list(range(config.num_slots, config.num_slots + config.num_pin_slots))
        self.pins: list[PinnedPrefix] = []
        self.waiting: deque[Group] = deque()
        self.running: list[Sequence] = []
        self.groups: dict[str, Group] = {}
        self._pending_ops: list[MemOp] = []
        # After a preemption the KV cache is known to be full: admit nothing until a sequence finishes,
        # or the preempted request would be re-admitted into the same shortage at once (a livelock).
        self._is_kv_full = False

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, salt: str = "") -> Group:
        """Queue a request; never refuses (engine/admission.py bounds what reaches the engine)."""
        group = Group(request=request, arrived_s=self.clock(), salt=salt)
        if request.media:
            group.layout = PromptLayout(request.media)
        for choice in range(request.n):
            group.seqs.append(
                Sequence(
                    group=group,
                    choice=choice,
                    tokens=list(request.prompt),
                    num_prompt=len(request.prompt),
                    max_new=request.max_new_tokens,
                )
            )
        self.waiting.append(group)
        self.groups[request.request_id] = group
        return group

    def abort(self, request_id: str) -> Group | None:
        group = self.groups.get(request_id)
        if group is None:
            return None
        for seq in group.seqs:
            self.finish(seq, None)
        if group in self.waiting:
            self.waiting.remove(group)
        self.groups.pop(request_id, None)
        return group

    def finish(self, seq: Sequence, reason: str | None) -> None:
        if seq.state is SeqState.FINISHED:
            return
        seq.state = SeqState.FINISHED
        seq.finish = reason
        if seq in self.running:
            self.running.remove(seq)
            self._is_kv_full = False
        if seq.slot >= 0:
            slot = self.slots[seq.slot]
            # Only tokens whose KV is computed stay cached; the last sampled token was never decoded.
            slot.tokens = seq.tokens[: seq.num_computed]
            slot.owner = None
            slot.last_used_s = self.clock()
        if seq.group.is_done:
            self.groups.pop(seq.group.request_id, None)

    def release(self, group: Group) -> None:
        self.groups.pop(group.request_id, None)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def tokens_held(self) -> int:
        """KV positions held by slots and pins: an upper bound, shared prefixes count once per holder."""
        held = sum(len(s.tokens) if s.owner is None else s.owner.num_computed for s in self.slots)
        return held + sum(len(p.tokens) for p in self.pins)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- planning ---------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        now = self.clock()
        self._expire_pins(now)
        plan = StepPlan(mem_ops=self.take_pending_ops())
        self._expire_waiting(now, plan)
        budget = self.config.batch_tokens
        for seq in self.running:
            if seq.state is SeqState.DECODE and budget > 0:
                plan.tokens.append(self._decode_token(seq, plan))
                budget -= 1
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

    def _decode_token(self, seq: Sequence, plan: StepPlan) -> BatchToken:
        index = seq.num_computed
        plan.advances.append((seq, index + 1))
        return BatchToken(seq.tokens[index], seq.group.pos_at(index), (seq.slot,), True, seq)

    def _prefill_chunk(self, seq: Sequence, budget: int, plan: StepPlan) -> int:
        """Plan the next prompt cells of ``seq`` (and its followers): text first, then at most one media
        slice — its batch is decoded after the text batch, so nothing after it is planned this step."""
        start = seq.num_computed
        end = min(len(seq.tokens), start + budget)
        group = seq.group
        members = [seq]
        if seq.choice == 0 and not group.is_prompt_split:
            members = [s for s in group.seqs if s.state is SeqState.PREFILL]
        span_index = group.layout.span_at(start) if group.layout is not None else None
        span = group.request.media[span_index] if span_index is not None else None
        if span is not None and span.offset <= start:
            return self._media_chunk(group, span_index, start, min(span.end, start + budget), members, plan)  # type: ignore[arg-type]
        if span is not None:
            end = min(end, span.offset)
        seq_ids = tuple(s.slot for s in members)
        for index in range(start, end):
            is_last = index == len(seq.tokens) - 1
            pos = index if group.layout is None else group.layout.pos_at(index)
            plan.tokens.append(BatchToken(seq.tokens[index], pos, seq_ids, is_last, seq if is_last else None))
        plan.advances.extend((m, end) for m in members)
        if span is not None and end == span.offset and end - start < budget:
            budget -= end - start
            return end - start + self._media_chunk(group, span_index, end, min(span.end, end + budget), members, plan)  # type: ignore[arg-type]
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

    def _want_media(self, group: Group, index: int, plan: StepPlan) -> None:
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

    def _idle_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.owner is None]

    def _can_admit(self, group: Group) -> bool:
        needed = sum(1 for s in group.seqs if s.state is SeqState.WAITING)
        return len(self._idle_slots()) >= needed

    def _best_source(
        self, tokens: list[int], salt: str, is_explicit: bool, layout: PromptLayout | None = None
    ) -> tuple[int, int]:
        """The (seq_id, length) of the longest reusable cached prefix. One token is recomputed for its
        logits, unless an idle slot holds the whole prompt with its last logits kept (``logits_for``)."""
        limit = len(tokens) - 1
        best_id, best_len = -1, 0
        candidates: list[tuple[int, list[int], str]] = [(p.seq_id, p.tokens, p.salt) for p in self.pins]
        if not is_explicit:  # explicit and implicit caching exclude each other (spec §4.2)
            candidates += [
                (s.seq_id, s.tokens if s.owner is None else s.owner.tokens[: s.owner.num_computed], s.salt)
                for s in self.slots
            ]
            if layout is None:
                for slot in self.slots:
                    if (
                        slot.owner is None
                        and slot.salt == salt
                        and slot.logits_for == len(tokens)
                        and slot.tokens[: len(tokens)] == tokens
                    ):
                        return slot.seq_id, len(tokens)
        for seq_id, cached, cached_salt in candidates:
            if cached_salt != salt:
                continue
            n = min(common_prefix_len(cached, tokens), limit)
            if layout is not None:
                n = layout.snap(n)  # whole media items only: their cells are matched by content key
            if n > best_len:
                best_id, best_len = seq_id, n
        return best_id, best_len

    def _admit(self, group: Group, plan: StepPlan) -> None:
        seqs = [s for s in group.seqs if s.state is SeqState.WAITING]
        is_explicit = bool(group.request.cache_pins)
        lead = seqs[0]
        source, reuse = self._best_source(lead.tokens, group.salt, is_explicit, group.layout)
        reuse_pos = group.pos_at(reuse)
        # Least valuable first: empty slots, then the least recently used. An idle source slot is taken
        # over only when this request keeps all it holds, or when no other slot is free; otherwise its
        # longer history stays cached and the shared prefix is copied (seq_cp shares cells, it is cheap).
        idle = sorted(self._idle_slots(), key=lambda s: (bool(s.tokens), s.last_used_s))
        chosen: list[Slot] = []
        if 0 <= source < len(self.slots) and self.slots[source].owner is None:
            holder = self.slots[source]
            others = len([s for s in idle if s is not holder])
            # Split streams: below min_copy_tokens a copy is refused; if what the holder would lose
            # past the shared prefix is as cheap to recompute, reuse it in place instead.
            is_cheap_tail = len(holder.tokens) - reuse < self.config.min_copy_tokens
            if (
                reuse >= len(holder.tokens)
                or reuse == len(lead.tokens)
                or others < len(seqs)
                or (reuse < self.config.min_copy_tokens and is_cheap_tail)
            ):
                chosen.append(holder)
        for slot in idle:
            if len(chosen) == len(seqs):
                break
            if slot not in chosen:
                chosen.append(slot)
        if 0 < reuse < self.config.min_copy_tokens and any(slot.seq_id != source for slot in chosen):
            source, reuse, reuse_pos = -1, 0, group.pos_at(0)  # a copy would cost more than it saves
        for seq, slot in zip(seqs, chosen, strict=True):
            slot.owner = seq
            slot.salt = group.salt
            seq.slot = slot.seq_id
            seq.state = SeqState.PREFILL
            seq.num_computed = reuse
            if slot.seq_id == source:
                plan.mem_ops.append(MemOp("rm", slot.seq_id, p0=reuse_pos))
                if reuse < slot.logits_for:
                    slot.logits_for = 0
            else:
                plan.mem_ops.append(MemOp("rm", slot.seq_id))
                slot.logits_for = 0
                if reuse > 0:
                    plan.mem_ops.append(MemOp("cp", slot.seq_id, src=source, p0=0, p1=reuse_pos))
            slot.tokens = seq.tokens[:reuse]
            self.running.append(seq)
        if reuse == len(lead.tokens):
            plan.replay.append(group)
        if not group.is_prompt_reported:
            group.cached_tokens = reuse
        group.was_admitted = True
        self._touch_pin(source)
        for index, span in enumerate(group.request.media):
            if span.end > reuse:  # encode ahead: the encoder works while earlier cells prefill
                self._want_media(group, index, plan)

    # -- results ----------------------------------------------------------------------------------
    def on_decoded(self, plan: StepPlan) -> None:
        """Advance computed counts after a successful llama_decode of the text batch of ``plan``."""
        for seq, num_computed in plan.advances:
            if seq.state is not SeqState.FINISHED and seq.num_computed < num_computed:
                seq.num_computed = num_computed

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

    def note_prompt_logits(self, seq: Sequence) -> None:
        """The engine kept the logits of ``seq``'s last prompt token (a fresh prompt, not a resumption)."""
        if seq.slot >= 0 and seq.num_computed == seq.num_prompt == len(seq.group.request.prompt):
            self.slots[seq.slot].logits_for = seq.num_prompt

    def prompt_done(self, seq: Sequence) -> bool:
        return seq.num_computed >= len(seq.tokens) and seq.state is SeqState.PREFILL

    def on_sampled(self, seq: Sequence, token: int) -> None:
        seq.tokens.append(token)
        seq.state = SeqState.DECODE

    def preempt_one(self) -> Sequence | None:
        """Free KV by recomputing the newest running sequence later (vLLM-style recompute preemption)."""
        victims = [s for s in self.running if s.state in (SeqState.DECODE, SeqState.PREFILL)]
        if len(victims) <= 1:
            return None
        victim = max(victims, key=lambda s: (s.group.arrived_s, s.choice))
        self.running.remove(victim)
        slot = self.slots[victim.slot]
        slot.owner = None
        slot.tokens = []
        slot.logits_for = 0
        self._pending_ops.append(MemOp("rm", slot.seq_id))
        victim.group.is_prompt_split = True
        victim.slot = -1
        victim.num_computed = 0
        victim.state = SeqState.WAITING
        self._is_kv_full = True
        if victim.group not in self.waiting:
            self.waiting.appendleft(victim.group)
        return victim

    def evict_idle(self) -> bool:
        """Drop the least recently used idle cached slot or pin; False when nothing is left to drop."""
        idle = [s for s in self._idle_slots() if s.tokens]
        if idle:
            slot = min(idle, key=lambda s: s.last_used_s)
            slot.tokens = []
            slot.logits_for = 0
            self._pending_ops.append(MemOp("rm", slot.seq_id))
            return True
        if self.pins:
            self._drop_pin(min(self.pins, key=lambda p: p.expires_s))
            return True
        return False

    def take_pending_ops(self) -> list[MemOp]:
        ops, self._pending_ops = self._pending_ops, []
        return ops

    # -- explicit cache ---------------------------------------------------------------------------
    def pin_prefixes(self, group: Group) -> int:
        """After the prompt is computed, create the entries its cache markers ask for; returns new tokens."""
        lead = group.seqs[0]
        created = 0
        covered = group.cached_tokens
        now = self.clock()
        for length in sorted(set(group.request.cache_pins)):
            if group.layout is not None:
                length = group.layout.snap(length)
            if length < self.config.min_pin_tokens or length > lead.num_prompt:
                continue
            prefix = lead.tokens[:length]
            existing = next((p for p in self.pins if p.salt == group.salt and p.tokens == prefix), None)
            if existing is not None:
                existing.expires_s = now + self.config.pin_ttl_s
                covered = max(covered, length)
                continue
            while (
                not self.free_pin_ids or self._pinned_tokens() + length > self.config.max_pinned_tokens
            ) and self.pins:
                self._drop_pin(min(self.pins, key=lambda p: p.expires_s))
            if not self.free_pin_ids or length > self.config.max_pinned_tokens:
                continue
            seq_id = self.free_pin_ids.pop()
            self._pending_ops.append(MemOp("rm", seq_id))
            self._pending_ops.append(MemOp("cp", seq_id, src=lead.slot, p0=0, p1=group.pos_at(length)))
            self.pins.append(PinnedPrefix(seq_id, prefix, group.salt, now + self.config.pin_ttl_s))
            created += length - min(covered, length)
            covered = length
        return created

    def _pinned_tokens(self) -> int:
        return sum(len(p.tokens) for p in self.pins)

    def _touch_pin(self, seq_id: int) -> None:
        for pin in self.pins:
            if pin.seq_id == seq_id:
                pin.expires_s = self.clock() + self.config.pin_ttl_s

    def _drop_pin(self, pin: PinnedPrefix) -> None:
        self.pins.remove(pin)
        self._pending_ops.append(MemOp("rm", pin.seq_id))
        self.free_pin_ids.append(pin.seq_id)

    def _expire_pins(self, now: float) -> None:
        for pin in [p for p in self.pins if p.expires_s <= now]:
            self._drop_pin(pin)
