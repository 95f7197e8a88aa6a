"""The KV/slot cache: sequence ids and the prefixes they hold, pinned prefixes, placement and eviction.

Pure (no llama_cpp): it answers with memory operations that the runner applies. Slots keep their cells
after use as an implicit prefix cache; pins are explicit-cache entries (spec §4.2). A pin's cells live
outside the KV cache, in a host-memory snapshot of the sequence that computed them (runner.py): its
key is a number at or above ``num_slots``, so a MemOp naming it is a snapshot operation, not a
llama.cpp sequence id. The KV cache is then sized for the running sequences alone, as llama-server's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qwenhost.engine.llamacpp.layout import PromptLayout
from qwenhost.engine.llamacpp.plan import MemOp
from qwenhost.engine.llamacpp.sequence import Group, Sequence


@dataclass(frozen=True, slots=True)
class CacheConfig:
    num_slots: int  # sequences that may run at once
    num_pin_slots: int  # explicit-cache entries kept at once
    min_pin_tokens: int = 1024
    pin_ttl_s: float = 300.0
    max_pinned_tokens: int = 65536  # cells held by all snapshots together
    # A cached prefix held by another sequence is copied only from this length on. Split KV streams
    # copy whole (a full context of cells), which beats recomputing only for long prefixes; 256 is
    # also DashScope's implicit-cache minimum. Unified caches share cells for free: 0.
    min_copy_tokens: int = 0


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
    """An explicit cache entry (spec §4.2): a prefix kept until it expires, in the host-memory snapshot
    ``seq_id`` (the entries one prompt creates share its snapshot, which holds ``cells`` cells)."""

    seq_id: int
    tokens: list[int]
    salt: str
    expires_s: float
    cells: int


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request's sequences start: ``reuse`` prompt cells come from sequence id ``source``."""

    reuse: int
    source: int  # -1: nothing reused
    mem_ops: tuple[MemOp, ...]
    is_replay: bool  # the whole prompt is reused with its kept logits: nothing to compute


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


class KvCache:
    def __init__(self, config: CacheConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.slots = [Slot(seq_id=i) for i in range(config.num_slots)]
        self._next_snapshot = config.num_slots  # snapshot keys never collide with sequence ids
        self.pins: list[PinnedPrefix] = []
        self._pending_ops: list[MemOp] = []

    # -- placement --------------------------------------------------------------------------------
    def idle_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.owner is None]

    def can_place(self, num_seqs: int) -> bool:
        return len(self.idle_slots()) >= num_seqs

    def place(self, group: Group, seqs: list[Sequence]) -> Placement:
        """Give each of ``seqs`` (the waiting choices of ``group``) an idle slot, reusing the longest
        cached prefix of their prompt; the caller checked can_place(len(seqs))."""
        lead = seqs[0]
        is_explicit = bool(group.request.cache_pins)
        source, reuse = self.best_source(lead.tokens, group.salt, is_explicit, group.layout)
        chosen = self._choose_slots(source, reuse, len(lead.tokens), len(seqs))
        if 0 < reuse < self.config.min_copy_tokens and any(slot.seq_id != source for slot in chosen):
            # A copy would cost more than it saves. An idle slot holding a prefix as long, or nearly
            # (a shared system prompt is in every slot), is reused in place instead.
            source, reuse = self.best_source(lead.tokens, group.salt, is_explicit, group.layout, idle_only=True)
            chosen = self._choose_slots(source, reuse, len(lead.tokens), len(seqs))
            if any(slot.seq_id != source for slot in chosen):
                source, reuse = -1, 0
        reuse_pos = group.pos_at(reuse)
        ops: list[MemOp] = []
        for seq, slot in zip(seqs, chosen, strict=True):
            slot.owner = seq
            slot.salt = group.salt
            seq.slot = slot.seq_id
            ops += self._claim(slot, source, reuse, reuse_pos)
            slot.tokens = seq.tokens[:reuse]
        self._touch_pin(source)
        return Placement(reuse, source, tuple(ops), reuse == len(lead.tokens))

    def _choose_slots(self, source: int, reuse: int, prompt_len: int, count: int) -> list[Slot]:
        """Least valuable first: empty slots, then the least recently used. An idle source slot is taken
        over only when this request keeps all it holds, or when no other slot is free; otherwise its
        longer history stays cached and the shared prefix is copied (seq_cp shares cells, it is cheap)."""
        idle = sorted(self.idle_slots(), key=lambda s: (bool(s.tokens), s.last_used_s))
        chosen: list[Slot] = []
        if 0 <= source < len(self.slots) and self.slots[source].owner is None:
            holder = self.slots[source]
            others = len([s for s in idle if s is not holder])
            # Split streams: below min_copy_tokens a copy is refused; if what the holder would lose
            # past the shared prefix is as cheap to recompute, reuse it in place instead.
            is_cheap_tail = len(holder.tokens) - reuse < self.config.min_copy_tokens
            if (
                reuse >= len(holder.tokens)
                or reuse == prompt_len
                or others < count
                or (reuse < self.config.min_copy_tokens and is_cheap_tail)
            ):
                chosen.append(holder)
        for slot in idle:
            if len(chosen) == count:
                break
            if slot not in chosen:
                chosen.append(slot)
        return chosen

    @staticmethod
    def _claim(slot: Slot, source: int, reuse: int, reuse_pos: int) -> list[MemOp]:
        if slot.seq_id == source:
            if reuse < slot.logits_for:
                slot.logits_for = 0
            return [MemOp("rm", slot.seq_id, p0=reuse_pos)]
        slot.logits_for = 0
        if reuse > 0:
            return [MemOp("rm", slot.seq_id), MemOp("cp", slot.seq_id, src=source, p0=0, p1=reuse_pos)]
        return [MemOp("rm", slot.seq_id)]

    def best_source(
        self,
        tokens: list[int],
        salt: str,
        is_explicit: bool,
        layout: PromptLayout | None = None,
        *,
        idle_only: bool = False,
    ) -> tuple[int, int]:
        """The (seq_id, length) of the longest reusable cached prefix (``idle_only``: held by an idle
        slot). One token is recomputed for its logits, unless an idle slot holds the whole prompt with
        its last logits kept (``logits_for``)."""
        candidates: list[tuple[int, list[int], str]] = (
            [] if idle_only else [(p.seq_id, p.tokens, p.salt) for p in self.pins]
        )
        if not is_explicit:  # explicit and implicit caching exclude each other (spec §4.2)
            if layout is None:
                whole = self._whole_prompt_slot(tokens, salt)
                if whole is not None:
                    return whole.seq_id, len(tokens)
            slots = self.idle_slots() if idle_only else self.slots
            candidates += [(s.seq_id, self._held(s), s.salt) for s in slots]
        best_id, best_len = -1, 0
        for seq_id, cached, cached_salt in candidates:
            if cached_salt != salt:
                continue
            n = min(common_prefix_len(cached, tokens), len(tokens) - 1)
            if layout is not None:
                n = layout.snap(n)  # whole media items only: their cells are matched by content key
            if n > best_len:
                best_id, best_len = seq_id, n
        return best_id, best_len

    def _whole_prompt_slot(self, tokens: list[int], salt: str) -> Slot | None:
        for slot in self.slots:
            if (
                slot.owner is None
                and slot.salt == salt
                and slot.logits_for == len(tokens)
                and slot.tokens[: len(tokens)] == tokens
            ):
                return slot
        return None

    @staticmethod
    def _held(slot: Slot) -> list[int]:
        return slot.tokens if slot.owner is None else slot.owner.tokens[: slot.owner.num_computed]

    # -- sequences leaving their slots ------------------------------------------------------------
    def release(self, seq: Sequence) -> None:
        """``seq`` is done with its slot; the cells it computed stay cached for later requests."""
        if seq.slot < 0:
            return
        slot = self.slots[seq.slot]
        if slot.owner is not seq:
            return
        slot.tokens = seq.tokens[: seq.num_computed]  # the last sampled token was never decoded
        slot.owner = None
        slot.last_used_s = self.clock()

    def drop(self, seq: Sequence) -> None:
        """``seq`` is preempted: its cells are dropped and it will be computed again."""
        slot = self.slots[seq.slot]
        slot.owner = None
        slot.tokens = []
        slot.logits_for = 0
        self._pending_ops.append(MemOp("rm", slot.seq_id))
        seq.slot = -1

    def forget(self, seq_id: int) -> None:
        """Drop what idle slot ``seq_id`` holds: after a failure its cells may be half-written, and a
        wrong cached prefix would silently corrupt a later answer."""
        if 0 <= seq_id < len(self.slots) and self.slots[seq_id].owner is None:
            slot = self.slots[seq_id]
            slot.tokens = []
            slot.logits_for = 0
            self._pending_ops.append(MemOp("rm", seq_id))

    def note_prompt_logits(self, seq: Sequence) -> None:
        """The engine kept the logits of ``seq``'s last prompt token (a fresh prompt, not a resumption)."""
        if seq.slot >= 0 and seq.num_computed == seq.num_prompt == len(seq.group.request.prompt):
            self.slots[seq.slot].logits_for = seq.num_prompt

    def evict_idle(self) -> bool:
        """Drop the least recently used idle cached slot; False when nothing is left to drop (pins hold
        no KV cells, dropping one would free none)."""
        idle = [s for s in self.idle_slots() if s.tokens]
        if not idle:
            return False
        slot = min(idle, key=lambda s: s.last_used_s)
        slot.tokens = []
        slot.logits_for = 0
        self._pending_ops.append(MemOp("rm", slot.seq_id))
        return True

    def take_pending_ops(self) -> list[MemOp]:
        ops, self._pending_ops = self._pending_ops, []
        return ops

    def tokens_held(self) -> int:
        """KV positions held by the slots (pins live outside the KV cache): an upper bound, shared
        prefixes count once per holder."""
        return sum(len(s.tokens) if s.owner is None else s.owner.num_computed for s in self.slots)

    # -- explicit cache ---------------------------------------------------------------------------
    def pin_prefixes(self, group: Group) -> int:
        """After the prompt is computed, create the entries its cache markers ask for, all in one
        snapshot of the prompt's cells; returns the tokens newly cached."""
        lead = group.seqs[0]
        created = 0
        covered = group.cached_tokens
        now = self.clock()
        fresh: list[int] = []
        for length in self._pin_lengths(group):
            existing = next((p for p in self.pins if p.salt == group.salt and p.tokens == lead.tokens[:length]), None)
            if existing is not None:
                existing.expires_s = now + self.config.pin_ttl_s
                covered = max(covered, length)
                continue
            fresh.append(length)
            created += length - min(covered, length)
            covered = length
        if not fresh or not self._make_room_for_pins(len(fresh), lead.num_prompt):
            return 0
        key = self._next_snapshot
        self._next_snapshot += 1
        self._pending_ops.append(MemOp("cp", key, src=lead.slot))
        for length in fresh:
            self.pins.append(
                PinnedPrefix(key, lead.tokens[:length], group.salt, now + self.config.pin_ttl_s, lead.num_prompt)
            )
        return created

    def _pin_lengths(self, group: Group) -> list[int]:
        lengths = set()
        for length in group.request.cache_pins:
            if group.layout is not None:
                length = group.layout.snap(length)
            if self.config.min_pin_tokens <= length <= group.seqs[0].num_prompt:
                lengths.add(length)
        return sorted(lengths)

    def _make_room_for_pins(self, count: int, cells: int) -> bool:
        if count > self.config.num_pin_slots or cells > self.config.max_pinned_tokens:
            return False
        while self.pins and (
            len(self.pins) + count > self.config.num_pin_slots
            or self._pinned_cells() + cells > self.config.max_pinned_tokens
        ):
            self._drop_pin(min(self.pins, key=lambda p: p.expires_s))
        return True

    def _pinned_cells(self) -> int:
        """Cells held by the snapshots, each counted once however many entries share it."""
        return sum({p.seq_id: p.cells for p in self.pins}.values())

    def _touch_pin(self, seq_id: int) -> None:
        for pin in self.pins:
            if pin.seq_id == seq_id:
                pin.expires_s = self.clock() + self.config.pin_ttl_s

    def _drop_pin(self, pin: PinnedPrefix) -> None:
        self.pins.remove(pin)
        if all(p.seq_id != pin.seq_id for p in self.pins):
            self._pending_ops.append(MemOp("rm", pin.seq_id))

    def expire_pins(self, now: float) -> None:
        for pin in [p for p in self.pins if p.expires_s <= now]:
            self._drop_pin(pin)
