"""Pure scheduling policy: admission, KV-slot assignment with prefix reuse, and per-step batch plans.

No llama_cpp, no asyncio, no threads (ARCHITECTURE.md, convention 7). The loop feeds it requests and
sampled tokens; it answers with memory operations and the tokens to decode in the next step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

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
    salt: str = ""

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
class StepPlan:
    mem_ops: list[MemOp] = field(default_factory=list)
    tokens: list[BatchToken] = field(default_factory=list)
    admitted: list[Group] = field(default_factory=list)
    expired: list[Group] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.tokens and not self.mem_ops


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


class QueueFull(Exception):
    pass


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

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, salt: str = "") -> Group:
        if len(self.waiting) >= self.config.max_waiting:
            raise QueueFull()
        group = Group(request=request, arrived_s=self.clock(), salt=salt)
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
                plan.tokens.append(self._decode_token(seq))
                budget -= 1
        while self.waiting and budget > 0 and self._can_admit(self.waiting[0]):
            group = self.waiting.popleft()
            self._admit(group, plan)
            plan.admitted.append(group)
        for seq in self.running:
            if budget <= 0:
                break
            if seq.state is SeqState.PREFILL and not seq.is_follower:
                budget -= self._prefill_chunk(seq, budget, plan)
        return plan

    def _decode_token(self, seq: Sequence) -> BatchToken:
        pos = seq.num_computed
        return BatchToken(seq.tokens[pos], pos, (seq.slot,), True, seq)

    def _prefill_chunk(self, seq: Sequence, budget: int, plan: StepPlan) -> int:
        start = seq.num_computed
        end = min(len(seq.tokens), start + budget)
        members = [seq]
        if seq.choice == 0 and not seq.group.is_prompt_split:
            members = [s for s in seq.group.seqs if s.state is SeqState.PREFILL]
        seq_ids = tuple(s.slot for s in members)
        for pos in range(start, end):
            is_last = pos == len(seq.tokens) - 1
            plan.tokens.append(BatchToken(seq.tokens[pos], pos, seq_ids, is_last, seq if is_last else None))
        return end - start

    def _expire_waiting(self, now: float, plan: StepPlan) -> None:
        while self.waiting and now - self.waiting[0].arrived_s > self.config.queue_timeout_s:
            group = self.waiting.popleft()
            for seq in group.seqs:
                seq.state = SeqState.FINISHED
            self.groups.pop(group.request_id, None)
            plan.expired.append(group)

    def _idle_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.owner is None]

    def _can_admit(self, group: Group) -> bool:
        needed = sum(1 for s in group.seqs if s.state is SeqState.WAITING)
        return len(self._idle_slots()) >= needed

    def _best_source(self, tokens: list[int], salt: str, is_explicit: bool) -> tuple[int, int]:
        """The (seq_id, length) of the longest reusable cached prefix; one token is always recomputed."""
        limit = len(tokens) - 1
        best_id, best_len = -1, 0
        candidates: list[tuple[int, list[int], str]] = [(p.seq_id, p.tokens, p.salt) for p in self.pins]
        if not is_explicit:  # explicit and implicit caching exclude each other (spec §4.2)
            candidates += [
                (s.seq_id, s.tokens if s.owner is None else s.owner.tokens[: s.owner.num_computed], s.salt)
                for s in self.slots
            ]
        for seq_id, cached, cached_salt in candidates:
            if cached_salt != salt:
                continue
            n = min(common_prefix_len(cached, tokens), limit)
            if n > best_len:
                best_id, best_len = seq_id, n
        return best_id, best_len

    def _admit(self, group: Group, plan: StepPlan) -> None:
        seqs = [s for s in group.seqs if s.state is SeqState.WAITING]
        is_explicit = bool(group.request.cache_pins)
        lead = seqs[0]
        source, reuse = self._best_source(lead.tokens, group.salt, is_explicit)
        idle = sorted(self._idle_slots(), key=lambda s: s.last_used_s)
        chosen: list[Slot] = []
        if source >= 0 and source < len(self.slots) and self.slots[source].owner is None:
            chosen.append(self.slots[source])
        for slot in idle:
            if len(chosen) == len(seqs):
                break
            if slot not in chosen:
                chosen.append(slot)
        for seq, slot in zip(seqs, chosen, strict=True):
            slot.owner = seq
            slot.salt = group.salt
            seq.slot = slot.seq_id
            seq.state = SeqState.PREFILL
            seq.num_computed = reuse
            if slot.seq_id == source:
                plan.mem_ops.append(MemOp("rm", slot.seq_id, p0=reuse))
            else:
                plan.mem_ops.append(MemOp("rm", slot.seq_id))
                if reuse > 0:
                    plan.mem_ops.append(MemOp("cp", slot.seq_id, src=source, p0=0, p1=reuse))
            slot.tokens = seq.tokens[:reuse]
            self.running.append(seq)
        if not group.is_prompt_reported:
            group.cached_tokens = reuse
        self._touch_pin(source)

    # -- results ----------------------------------------------------------------------------------
    def on_decoded(self, plan: StepPlan) -> None:
        """Advance computed counts after a successful llama_decode of ``plan``."""
        for bt in plan.tokens:
            for seq_id in bt.seq_ids:
                slot = self.slots[seq_id] if seq_id < len(self.slots) else None
                if slot is None or slot.owner is None:
                    continue
                seq = slot.owner
                if seq.num_computed == bt.pos:
                    seq.num_computed += 1

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
        self._pending_ops.append(MemOp("rm", slot.seq_id))
        victim.group.is_prompt_split = True
        victim.slot = -1
        victim.num_computed = 0
        victim.state = SeqState.WAITING
        if victim.group not in self.waiting:
            self.waiting.appendleft(victim.group)
        return victim

    def evict_idle(self) -> bool:
        """Drop the least recently used idle cached slot or pin; False when nothing is left to drop."""
        idle = [s for s in self._idle_slots() if s.tokens]
        if idle:
            slot = min(idle, key=lambda s: s.last_used_s)
            slot.tokens = []
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
            self._pending_ops.append(MemOp("cp", seq_id, src=lead.slot, p0=0, p1=length))
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
