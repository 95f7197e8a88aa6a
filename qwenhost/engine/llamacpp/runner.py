"""Model and context lifetime, the llama_batch, llama_decode and logits access (the only llama_cpp user)."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import llama_cpp as L
import numpy as np

from qwenhost.engine.llamacpp.plan import BatchToken, MemOp
from qwenhost.engine.protocol import ModelInfo

log = logging.getLogger("qwenhost.llama")

# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation (ggml.h).
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}


# With a unified KV cache llama.cpp compares the whole cache with the training context and warns;
# qwenhost bounds every request by context_length itself, so the warning is noise.
_QUIET = (b"possible training context overflow",)


def _forward_log(level: int, text: bytes, _user: object) -> None:
    # llama.cpp is chatty at load time; its messages go to our logger at debug level, errors as errors.
    py_level = _LEVELS.get(level, logging.DEBUG)
    if any(q in text for q in _QUIET):
        py_level = logging.DEBUG
    if log.isEnabledFor(py_level):
        log.log(py_level, "%s", text.decode("utf-8", errors="replace").rstrip())


LOG_CALLBACK = L.llama_log_callback(_forward_log)  # shared by mtmd (projector.py)


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    model_path: str
    num_seq_ids: int  # running slots; an id at or above it is a host-memory snapshot key (kvcache.py)
    kv_tokens: int | None  # total KV cells shared by all sequences; None: context_length * parallel
    batch_tokens: int
    n_threads: int
    n_threads_batch: int
    context_length: int | None  # per request; None: min(n_ctx_train, 8192)
    parallel: int = 1
    n_gpu_layers: int = 0
    flash_attn: bool | None = None
    kv_cache_type: str = "f16"
    # One KV stream per sequence id (llama-server's layout) instead of one buffer for all: each row
    # attends over its own sequence's cells only, which decodes faster, but a prefix shared across
    # slots is a whole-stream copy and every stream is sized for a full context.
    kv_split: bool = False
    # llama.cpp's CPU extra buffer types (AMX kernels, repacked Q4_0/IQ4_NL weights); off where they
    # crash (engine/llamacpp/cpu_probe.py), as llama-server's --no-repack.
    weight_repack: bool = True


DEFAULT_CONTEXT = 8192


class DecodeError(RuntimeError):
    pass


class KvCacheFull(DecodeError):
    pass


# ggml_type ids of the KV cache types llama.cpp accepts (config.KV_CACHE_TYPES); any other name is refused.
_GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}


class LlamaRunner:
    """Owns one llama_model + llama_context. Used only from the engine thread."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        if config.kv_cache_type not in _GGML_TYPES:  # before anything is loaded
            raise ValueError(f"unknown kv_cache_type {config.kv_cache_type!r}; known: {', '.join(_GGML_TYPES)}")
        L.llama_log_set(LOG_CALLBACK, ctypes.c_void_p(0))
        L.llama_backend_init()
        model_params = L.llama_model_default_params()
        model_params.n_gpu_layers = config.n_gpu_layers
        model_params.use_extra_bufts = config.weight_repack
        self.model = L.llama_model_load_from_file(config.model_path.encode(), model_params)
        if not self.model:
            raise RuntimeError(f"could not load the GGUF model at {config.model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        n_ctx_train = L.llama_model_n_ctx_train(self.model)
        self.context_length = config.context_length or min(n_ctx_train, DEFAULT_CONTEXT)
        ctx_params = L.llama_context_default_params()
        if config.kv_split:
            ctx_params.n_ctx = self.context_length * config.num_seq_ids
        else:
            ctx_params.n_ctx = config.kv_tokens or self.context_length * config.parallel
        # Split streams cannot share a token between sequences: such tokens are decoded once per
        # sequence, so a batch may hold up to num_seq_ids copies of each.
        width = config.batch_tokens * (config.num_seq_ids if config.kv_split else 1)
        ctx_params.n_batch = width
        ctx_params.n_ubatch = min(config.batch_tokens, 512)
        ctx_params.n_seq_max = config.num_seq_ids
        ctx_params.n_threads = config.n_threads
        ctx_params.n_threads_batch = config.n_threads_batch
        ctx_params.kv_unified = not config.kv_split  # unified: prefix cells are shared (seq_cp)
        ctx_params.no_perf = True
        ctx_params.swa_full = True
        if config.flash_attn is not None:
            ctx_params.flash_attn_type = 1 if config.flash_attn else 0
        ctx_params.type_k = ctx_params.type_v = _GGML_TYPES[config.kv_cache_type]
        self.ctx = L.llama_init_from_model(self.model, ctx_params)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise RuntimeError(
                f"could not create the llama.cpp context for {ctx_params.n_ctx} KV cells (not enough memory?): "
                'lower context_length or parallel, use kv_cache_type = "q8_0", or bound the '
                "cache with kv_cache_tokens"
            )
        self.memory = L.llama_get_memory(self.ctx)
        self._snapshots: dict[int, ctypes.Array[ctypes.c_uint8]] = {}  # explicit-cache entries' cells
        self.kv_tokens = L.llama_n_ctx(self.ctx)
        self.pieces = [self._piece(t) for t in range(self.n_vocab)]
        self.eog = frozenset(t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self.vocab, t))
        self._alloc_batch(width, config.num_seq_ids)
        self.info = self._model_info()

    # -- batch ------------------------------------------------------------------------------------
    def _alloc_batch(self, n_tokens: int, n_seq: int) -> None:
        self._tok = np.zeros(n_tokens, dtype=np.int32)
        self._pos = np.zeros(n_tokens, dtype=np.int32)
        self._nseq = np.zeros(n_tokens, dtype=np.int32)
        self._seq = np.zeros((n_tokens, n_seq), dtype=np.int32)
        self._out = np.zeros(n_tokens, dtype=np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        row_bytes = self._seq.strides[0]
        base = self._seq.ctypes.data
        self._seq_ptrs = (i32p * n_tokens)(*[ctypes.cast(base + i * row_bytes, i32p) for i in range(n_tokens)])
        # The batch points into numpy buffers so one step fills it with array writes, not ctypes calls.
        batch = L.llama_batch()
        batch.token = self._tok.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.embd = ctypes.POINTER(ctypes.c_float)()  # type: ignore[assignment]
        batch.pos = self._pos.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.n_seq_id = self._nseq.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(i32p))  # type: ignore[assignment]
        batch.logits = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))  # type: ignore[assignment]
        self._batch = batch

    def decode(self, tokens: list[BatchToken]) -> dict[int, int]:
        """Decode one batch; returns {index in ``tokens`` -> logits row} for the rows that want logits."""
        order = self._split_order(tokens) if self.config.kv_split else [(i, bt.seq_ids) for i, bt in enumerate(tokens)]
        rows: dict[int, int] = {}
        for row, (i, seq_ids) in enumerate(order):
            bt = tokens[i]
            self._tok[row] = bt.token
            self._pos[row] = bt.pos
            k = len(seq_ids)
            self._nseq[row] = k
            self._seq[row, :k] = seq_ids
            wants = bt.wants_logits and i not in rows
            self._out[row] = 1 if wants else 0
            if wants:
                rows[i] = row
        n = len(order)
        self._batch.n_tokens = n
        status = L.llama_decode(self.ctx, self._batch)
        if status == 1:
            raise KvCacheFull("no KV cells left for this batch")
        if status != 0:
            raise DecodeError(f"llama_decode returned {status}")
        return rows

    @staticmethod
    def _split_order(tokens: list[BatchToken]) -> list[tuple[int, tuple[int, ...]]]:
        """Split streams: one entry per (token, sequence), ordered by sequence id and stable within
        one, because llama.cpp decodes streams together only in runs of consecutive ids (and
        rejects a token shared by two streams). The first copy of a token carries its logits."""
        expanded: list[tuple[int, tuple[int, ...]]] = [(i, (seq,)) for i, bt in enumerate(tokens) for seq in bt.seq_ids]
        expanded.sort(key=lambda entry: entry[1][0])
        return expanded

    def decode_embeddings(self, embd: np.ndarray, positions: np.ndarray, seq_ids: tuple[int, ...]) -> None:
        if self.config.kv_split and len(seq_ids) > 1:
            for seq in seq_ids:
                self.decode_embeddings(embd, positions, (seq,))
            return
        self._decode_embeddings(embd, positions, seq_ids)

    def _decode_embeddings(self, embd: np.ndarray, positions: np.ndarray, seq_ids: tuple[int, ...]) -> None:
        """Decode media embeddings (``embd``: rows x n_embd_inp float32) at ``positions`` (section-major,
        n_pos_per_embd x rows). A batch of its own: llama_batch carries either tokens or embeddings."""
        n = embd.shape[0]
        embd = np.ascontiguousarray(embd, dtype=np.float32)
        pos = np.ascontiguousarray(positions, dtype=np.int32)
        n_seq = np.full(n, len(seq_ids), dtype=np.int32)
        seq = np.tile(np.asarray(seq_ids, dtype=np.int32), (n, 1))
        outputs = np.zeros(n, dtype=np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        rows = (i32p * n)(*[ctypes.cast(seq.ctypes.data + i * seq.strides[0], i32p) for i in range(n)])
        batch = L.llama_batch()
        batch.n_tokens = n
        batch.token = ctypes.cast(None, i32p)  # type: ignore[assignment,arg-type]
        batch.embd = embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))  # type: ignore[assignment]
        batch.pos = pos.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.n_seq_id = n_seq.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.seq_id = ctypes.cast(rows, ctypes.POINTER(i32p))  # type: ignore[assignment]
        batch.logits = outputs.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))  # type: ignore[assignment]
        status = L.llama_decode(self.ctx, batch)
        if status == 1:
            raise KvCacheFull("no KV cells left for this batch")
        if status != 0:
            raise DecodeError(f"llama_decode returned {status} for media embeddings")

    def logits(self, row: int) -> np.ndarray:
        ptr = L.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def apply(self, ops: Iterable[MemOp]) -> list[int]:
        """Apply ``ops`` in order; returns the sequence ids an explicit-cache entry could not be restored
        into (no free cells: the unified layout, full), which the caller must fail."""
        failed: list[int] = []
        for op in ops:
            if op.dst >= self.config.num_seq_ids:
                self._snapshot_op(op)
            elif op.kind == "cp" and op.src >= self.config.num_seq_ids:
                if not self._restore(op):
                    failed.append(op.dst)
            elif op.kind == "rm":
                L.llama_memory_seq_rm(self.memory, op.dst, op.p0, op.p1)
            elif op.kind == "cp" and self.config.kv_split:
                # Streams copy whole (llama.cpp refuses part of one): copy, then cut the tail.
                L.llama_memory_seq_rm(self.memory, op.dst, -1, -1)
                L.llama_memory_seq_cp(self.memory, op.src, op.dst, -1, -1)
                if op.p1 >= 0:
                    L.llama_memory_seq_rm(self.memory, op.dst, op.p1, -1)
            elif op.kind == "cp":
                L.llama_memory_seq_cp(self.memory, op.src, op.dst, op.p0, op.p1)
        return failed

    def _snapshot_op(self, op: MemOp) -> None:
        """``rm``: forget snapshot ``dst``; ``cp``: copy sequence ``src``'s cells into snapshot ``dst``."""
        if op.kind == "rm":
            self._snapshots.pop(op.dst, None)
            return
        size = L.llama_state_seq_get_size(self.ctx, op.src)
        buf = (ctypes.c_uint8 * size)()
        if L.llama_state_seq_get_data(self.ctx, buf, size, op.src) == 0:
            raise DecodeError(f"could not copy sequence {op.src} into an explicit-cache entry")
        self._snapshots[op.dst] = buf

    def _restore(self, op: MemOp) -> bool:
        """Give sequence ``dst`` the cells of snapshot ``src`` up to position ``p1``; False when they found
        no room (a sequence believed to hold a prefix it does not hold would silently corrupt its answer)."""
        buf = self._snapshots.get(op.src)
        if buf is None:
            raise DecodeError(f"explicit-cache entry {op.src} is not held")
        L.llama_memory_seq_rm(self.memory, op.dst, -1, -1)
        if L.llama_state_seq_set_data(self.ctx, buf, len(buf), op.dst) == 0:
            L.llama_memory_seq_rm(self.memory, op.dst, -1, -1)
            return False
        if op.p1 >= 0:
            L.llama_memory_seq_rm(self.memory, op.dst, op.p1, -1)
        return True

    def snapshot_bytes(self) -> int:
        """Host memory held by explicit-cache entries (read from other threads: values() copied at once)."""
        return sum(len(buf) for buf in list(self._snapshots.values()))

    # -- vocabulary -------------------------------------------------------------------------------
    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, True)
        return buf.raw[:n]

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def grammar_tokenizer(self) -> Any:
        """llguidance's view of the vocabulary (~1 s for 150k tokens). Every end-of-generation token counts
        as EOS, so a finished grammar lets the model end its turn the way it was trained to."""
        from llguidance.llamacpp import lltokenizer_from_vocab

        return lltokenizer_from_vocab(self.vocab, n_vocab=self.n_vocab, eos_token=sorted(self.eog) or None)

    def _meta(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(1 << 20)
        for i in range(L.llama_model_meta_count(self.model)):
            L.llama_model_meta_key_by_index(self.model, i, buf, len(buf))
            key = buf.value.decode("utf-8", errors="replace")
            if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type", "scores")):
                continue
            L.llama_model_meta_val_str_by_index(self.model, i, buf, len(buf))
            out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def _model_info(self) -> ModelInfo:
        meta = self._meta()
        template = L.llama_model_chat_template(self.model, None)
        special: dict[str, int] = {}
        for t in range(self.n_vocab):
            attr = L.llama_vocab_get_attr(self.vocab, t)
            if attr & (L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_USER_DEFINED):
                special[self.pieces[t].decode("utf-8", errors="replace")] = t
        bos = L.llama_vocab_bos(self.vocab)
        eos = L.llama_vocab_eos(self.vocab)
        return ModelInfo(
            context_length=self.context_length,
            n_vocab=self.n_vocab,
            chat_template=template.decode("utf-8") if template else None,
            bos_token=self.pieces[bos].decode("utf-8", errors="replace") if bos >= 0 else "",
            eos_token=self.pieces[eos].decode("utf-8", errors="replace") if eos >= 0 else "",
            metadata=meta,
            special_tokens=special,
            end_tokens=self.eog,
        )

    def close(self) -> None:
        if self.ctx:
            L.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            L.llama_model_free(self.model)
            self.model = None
