"""Fakes for the engine's seams: a clock, a runner whose logits are scripted, a sampler, request builders."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from qwenhost.core.types import SamplingParams
from qwenhost.engine.llamacpp.decoder import SamplerFactory
from qwenhost.engine.llamacpp.plan import BatchToken, MemOp
from qwenhost.engine.llamacpp.scheduler import Scheduler, SchedulerConfig
from qwenhost.engine.llamacpp.sequence import SeqState
from qwenhost.engine.protocol import GenerationRequest

N_VOCAB = 64
END = 0  # the fake model's end-of-generation token


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """The next token after ``t`` is ``t + 1`` (mod N_VOCAB, skipping END): each logits row peaks there.

    ``fail_decode`` makes the next decode raise it; ``gate`` (when set) makes decode wait for it, as a
    wedged llama_decode would; ``entered`` is set each time decode starts."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = [b""] + [bytes([0x40 + t]) for t in range(1, N_VOCAB)]  # 1 -> b"A" ...
        self.eog: frozenset[int] = frozenset({END})
        self.batches: list[list[BatchToken]] = []
        self.ops: list[MemOp] = []
        self.fail_decode: BaseException | None = None
        self.full_seq_ids: set[int] = set()
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._logits = np.zeros((0, N_VOCAB), dtype=np.float32)

    def decode(self, tokens: list[BatchToken]) -> dict[int, int]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if self.fail_decode is not None:
            error, self.fail_decode = self.fail_decode, None
            raise error
        self.batches.append(list(tokens))
        wanted = [i for i, bt in enumerate(tokens) if bt.wants_logits]
        self._logits = np.zeros((len(wanted), N_VOCAB), dtype=np.float32)
        for row, i in enumerate(wanted):
            self._logits[row, next_token(tokens[i].token)] = 10.0
        return {i: row for row, i in enumerate(wanted)}

    def decode_embeddings(self, embd: np.ndarray, positions: np.ndarray, seq_ids: tuple[int, ...]) -> None:
        raise AssertionError("the fake runner has no media")

    def logits(self, row: int) -> np.ndarray:
        row_logits: np.ndarray = self._logits[row]
        return row_logits

    def apply(self, ops: Iterable[MemOp]) -> list[int]:
        """Records ``ops``; a copy into a sequence id in ``full_seq_ids`` fails as a restore into a full
        cache would."""
        ops = list(ops)
        self.ops.extend(ops)
        return [op.dst for op in ops if op.kind == "cp" and op.dst in self.full_seq_ids]


def next_token(token: int) -> int:
    return token % (N_VOCAB - 1) + 1


class FakeSampler:
    """Greedy over the runner's rows; remembers what it was told to accept."""

    def __init__(self, runner: FakeRunner) -> None:
        self.runner = runner
        self.accepted: list[int] = []
        self.is_freed = False

    def sample(self, row: int) -> int:
        return self.sample_array(self.runner.logits(row))

    def sample_array(self, logits: np.ndarray) -> int:
        token = int(np.argmax(logits))
        self.accepted.append(token)
        return token

    def accept(self, token: int) -> None:
        self.accepted.append(token)

    def free(self) -> None:
        self.is_freed = True


def sampler_factory(runner: FakeRunner) -> tuple[list[FakeSampler], SamplerFactory]:
    made: list[FakeSampler] = []

    def make(params: SamplingParams, prompt: Sequence[int]) -> FakeSampler:
        sampler = FakeSampler(runner)
        made.append(sampler)
        return sampler

    return made, make


def config(**overrides: object) -> SchedulerConfig:
    values: dict[str, object] = dict(
        num_slots=2,
        num_pin_slots=2,
        batch_tokens=64,
        max_waiting=4,
        queue_timeout_s=30.0,
        min_pin_tokens=4,
        pin_ttl_s=300.0,
        max_pinned_tokens=100,
    )
    values.update(overrides)
    return SchedulerConfig(**values)  # type: ignore[arg-type]


def request(
    rid: str,
    prompt: list[int],
    n: int = 1,
    max_new: int = 5,
    pins: tuple[int, ...] = (),
    salt: str = "",
    inject_fault: bool = False,
) -> GenerationRequest:
    return GenerationRequest(
        rid,
        tuple(prompt),
        tuple(SamplingParams() for _ in range(n)),
        max_new,
        cache_pins=pins,
        cache_salt=salt,
        inject_fault=inject_fault,
    )


def run_prompt(s: Scheduler) -> None:
    """Plan steps until every admitted sequence has its prompt computed, then 'sample' one token each."""
    for _ in range(20):
        plan = s.schedule()
        if not plan.tokens:
            return
        s.on_decoded(plan)
        for bt in plan.tokens:
            if bt.owner is not None and bt.owner.is_prompt_computed:
                for seq in bt.owner.group.seqs:
                    if seq.state is SeqState.PREFILL and seq.is_prompt_computed:
                        s.on_sampled(seq, [500])
        if all(q.state is not SeqState.PREFILL for q in s.running):
            return
