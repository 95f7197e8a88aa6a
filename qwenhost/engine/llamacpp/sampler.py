"""Per-sequence sampling on llama.cpp's C sampler chain: penalties, temperature, top-k, top-p, seed.

Order follows HF/vLLM semantics, which DashScope's parameters describe: penalties, then temperature,
then top-k and top-p on the tempered distribution, then a seeded draw. repetition_penalty also
covers the prompt (HF/vLLM); presence and frequency penalties cover only the output (OpenAI).
"""

from __future__ import annotations

import ctypes
import secrets
from collections.abc import Sequence

import llama_cpp as L
import numpy as np

from qwenhost.core.types import SamplingParams

# llama_token_data {int32 id; float logit; float p;} as a numpy record, for sampling kept logits.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class SequenceSampler:
    def __init__(
        self, ctx: ctypes.c_void_p, n_vocab: int, params: SamplingParams, prompt: Sequence[int], window: int
    ) -> None:
        self._ctx = ctx
        chain_params = L.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.chain = L.llama_sampler_chain_init(chain_params)
        self.seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
        self._cur: np.ndarray | None = None
        if params.logit_bias:
            biases = (L.llama_logit_bias * len(params.logit_bias))(
                *[L.llama_logit_bias(token, bias) for token, bias in params.logit_bias]
            )
            L.llama_sampler_chain_add(
                self.chain, L.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases)
            )
        if params.repetition_penalty != 1.0:
            rep = L.llama_sampler_init_penalties(n_vocab, window, params.repetition_penalty, 0.0, 0.0)
            for token in prompt[-window:]:
                if token >= 0:  # media cells hold negative content keys, not vocabulary ids
                    L.llama_sampler_accept(rep, token)
            L.llama_sampler_chain_add(self.chain, rep)
        if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
            pen = L.llama_sampler_init_penalties(
                n_vocab, window, 1.0, params.frequency_penalty, params.presence_penalty
            )
            L.llama_sampler_chain_add(self.chain, pen)
        if params.temperature <= 0.0:
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_temp(params.temperature))
            if params.top_k > 0:
                L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_top_p(params.top_p, 1))
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_dist(self.seed))

    def sample(self, row: int) -> int:
        """Sample from logits row ``row`` of the last decode; the chain records the token itself."""
        return int(L.llama_sampler_sample(self.chain, self._ctx, row))

    def sample_array(self, logits: np.ndarray) -> int:
        """Sample from a logits vector held outside the context (kept logits of a reused prompt); the
        chain runs exactly as llama_sampler_sample runs it on a context row."""
        n = logits.shape[0]
        if self._cur is None or self._cur.shape[0] != n:
            self._cur = np.zeros(n, dtype=_TOKEN_DATA)
        cur = self._cur
        cur["id"] = np.arange(n, dtype=np.int32)
        cur["logit"] = logits
        cur["p"] = 0.0
        array = L.llama_token_data_array(
            data=cur.ctypes.data_as(ctypes.POINTER(L.llama_token_data)), size=n, selected=-1, sorted=False
        )
        L.llama_sampler_apply(self.chain, ctypes.byref(array))
        token = int(array.data[array.selected].id)  # data may have been re-pointed by a sampler
        L.llama_sampler_accept(self.chain, token)
        return token

    def accept(self, token: int) -> None:
        """Record a token chosen without sampling (forced tokens) so penalties stay right."""
        L.llama_sampler_accept(self.chain, token)

    def free(self) -> None:
        if self.chain:
            L.llama_sampler_free(self.chain)
            self.chain = None


def mask_logits(logits: np.ndarray, allowed: np.ndarray) -> None:
    """Set disallowed tokens to -inf in place (``allowed`` is a boolean vector of the vocabulary)."""
    logits[~allowed[: logits.shape[0]]] = -np.inf


def token_logprobs(logits: np.ndarray, token: int, top_n: int) -> tuple[float | None, list[tuple[int, float]]]:
    """log-softmax of the raw logits: the chosen token's logprob and the ``top_n`` best alternatives."""
    peak = float(np.max(logits))
    shifted = logits - peak
    log_z = float(np.log(np.sum(np.exp(shifted, dtype=np.float64))))
    chosen = float(shifted[token]) - log_z
    top: list[tuple[int, float]] = []
    if top_n > 0:
        idx = np.argpartition(-logits, top_n)[:top_n]
        idx = idx[np.argsort(-logits[idx])]
        top = [(int(i), float(shifted[i]) - log_z) for i in idx]
    return (chosen if np.isfinite(chosen) else None), top
