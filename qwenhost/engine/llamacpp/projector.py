"""The mtmd context of a vision/audio model: projector metadata, the KV layout of media, and encoding.

Layout (token counts, grids) uses placeholder bitmaps, which mtmd counts without pixels; it is
thread-safe on a shared context and runs on the service's worker threads. Encoding runs only on the
encoder thread, which owns the context for that purpose (mtmd_encode_chunk is not thread-safe).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import llama_cpp as L
import llama_cpp.mtmd_cpp as M
import numpy as np

from qwenhost.engine.llamacpp.gguf_meta import read_metadata
from qwenhost.engine.llamacpp.runner import LOG_CALLBACK
from qwenhost.engine.protocol import (
    AudioInput,
    EnginePrompt,
    MediaCapabilities,
    MediaSpan,
    PromptPiece,
    VisualInput,
)

log = logging.getLogger("qwenhost.media")

_AUDIO = M.MTMD_INPUT_CHUNK_TYPE_AUDIO
_TEXT = M.MTMD_INPUT_CHUNK_TYPE_TEXT


class ProjectorError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class VisualChunk:
    """Span payload: chunk ``index`` of a visual input, a grid of ``nx`` x ``ny`` tokens at ``origin``."""

    source: VisualInput
    index: int
    nx: int
    ny: int
    origin: int


@dataclass(frozen=True, slots=True)
class AudioChunk:
    source: AudioInput
    index: int  # mtmd splits long audio into windows (30 s for Whisper-style encoders)


def _key(*parts: bytes) -> int:
    """A negative id for the cells of one chunk: equal content and layout give equal keys."""
    h = hashlib.blake2b(b"\0".join(parts), digest_size=7).digest()
    return -1 - int.from_bytes(h, "little")


def capabilities_from_file(path: str) -> tuple[str | None, str | None, int, int]:
    meta = read_metadata(path)
    legacy = meta.get("clip.projector_type")
    vision = meta.get("clip.vision.projector_type", legacy) if meta.get("clip.has_vision_encoder") else None
    audio = meta.get("clip.audio.projector_type", legacy) if meta.get("clip.has_audio_encoder") else None
    patch = int(meta.get("clip.vision.patch_size", 0) or 0)
    merge = int(meta.get("clip.vision.spatial_merge_size", 2 if vision else 1) or 1)
    return (
        str(vision) if vision else None,
        str(audio) if audio else None,
        patch,
        merge,
    )


class Projector:
    def __init__(self, mmproj_path: str, model: Any, *, n_threads: int, use_gpu: bool, max_image_tokens: int) -> None:
        vision, audio, patch, merge = capabilities_from_file(mmproj_path)
        M.mtmd_helper_log_set(LOG_CALLBACK, ctypes.c_void_p(0))
        params = M.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = False
        # We hand mtmd images already smart-resized: its own limits must never resize them again.
        params.image_min_tokens = 1
        params.image_max_tokens = max_image_tokens
        self.ctx = M.mtmd_init_from_file(mmproj_path.encode(), model, params)
        if not self.ctx:
            raise ProjectorError(f"could not load the multimodal projector {mmproj_path} for this model")
        self.n_embd = int(L.llama_model_n_embd_inp(model))
        self.uses_mrope = bool(M.mtmd_decode_use_mrope(self.ctx))
        has_vision, has_audio = bool(M.mtmd_support_vision(self.ctx)), bool(M.mtmd_support_audio(self.ctx))
        self.capabilities = MediaCapabilities(
            vision_projector=vision if has_vision else None,
            audio_projector=audio if has_audio else None,
            patch_size=patch,
            merge_size=merge,
            audio_sample_rate=int(M.mtmd_get_audio_sample_rate(self.ctx)) if has_audio else 0,
            uses_mrope=self.uses_mrope,
        )

    def close(self) -> None:
        if self.ctx:
            M.mtmd_free(self.ctx)
            self.ctx = None

    # -- tokenizing media -------------------------------------------------------------------------
    @contextmanager
    def _chunks(self, bitmaps: Sequence[Any]) -> Iterator[list[Any]]:
        """Tokenize ``bitmaps`` alone (no text parts) and yield their media chunks; frees everything."""
        chunks = M.mtmd_input_chunks_init()
        parts = []
        for bitmap in bitmaps:
            part = M.mtmd_input_part()
            part.text = None  # type: ignore[assignment]  # a bitmap part: no text
            part.bitmap = bitmap
            parts.append(part)
        array = (ctypes.POINTER(M.mtmd_input_part) * len(parts))(*[ctypes.pointer(p) for p in parts])
        try:
            status = M.mtmd_tokenize_from_parts(self.ctx, chunks, array, len(parts), False)
            if status != 0:
                raise ProjectorError(f"mtmd could not tokenize the media (status {status})")
            found = []
            for i in range(M.mtmd_input_chunks_size(chunks)):
                chunk = M.mtmd_input_chunks_get(chunks, i)
                if M.mtmd_input_chunk_get_type(chunk) != _TEXT:
                    found.append(chunk)
            yield found
        finally:
            M.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                M.mtmd_bitmap_free(bitmap)

    def _visual_bitmaps(self, width: int, height: int, frames: Sequence[bytes | None]) -> list[Any]:
        bitmaps = []
        for frame in frames:
            data = None if frame is None else ctypes.cast(ctypes.c_char_p(frame), ctypes.POINTER(ctypes.c_uint8))
            bitmap = M.mtmd_bitmap_init(width, height, data)
            M.mtmd_bitmap_set_mergeable(bitmap, len(frames) > 1)  # a frame pair merges into one chunk
            bitmaps.append(bitmap)
        return bitmaps

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one Projector per model, kept for its lifetime
    def visual_grid(self, width: int, height: int, frames_per_chunk: int) -> tuple[int, int, int]:
        """(n_tokens, nx, ny) of one chunk of ``frames_per_chunk`` frames of this size."""
        with self._chunks(self._visual_bitmaps(width, height, [None] * frames_per_chunk)) as chunks:
            if len(chunks) != 1:
                raise ProjectorError(f"expected one image chunk, mtmd made {len(chunks)}")
            image = M.mtmd_input_chunk_get_tokens_image(chunks[0])
            n_tokens = int(M.mtmd_input_chunk_get_n_tokens(chunks[0]))
            nx, ny = int(M.mtmd_image_tokens_get_nx(image)), int(M.mtmd_image_tokens_get_ny(image))
        return n_tokens, nx, ny

    def audio_windows(self, n_samples: int) -> list[int]:
        """Token counts of the windows mtmd cuts ``n_samples`` of audio into."""
        with self._chunks([M.mtmd_bitmap_init_from_audio(n_samples, None)]) as chunks:
            return [int(M.mtmd_input_chunk_get_n_tokens(c)) for c in chunks]

    # -- layout -----------------------------------------------------------------------------------
    def layout(self, pieces: Sequence[PromptPiece]) -> EnginePrompt:
        builder = _LayoutBuilder(self)
        for piece in pieces:
            if isinstance(piece, tuple):
                builder.text(piece)
            elif isinstance(piece, VisualInput):
                builder.visual(piece)
            else:
                builder.audio(piece)
        return EnginePrompt(tuple(builder.tokens), tuple(builder.spans), tuple(builder.piece_tokens))

    # -- encoding (encoder thread only) -----------------------------------------------------------
    def encode(self, span: MediaSpan) -> np.ndarray:
        """The span's embeddings, rows x n_embd float32 (a copy: mtmd reuses its output buffer)."""
        payload = span.payload
        if isinstance(payload, VisualChunk):
            src = payload.source
            frames = src.frames[payload.index * 2 : payload.index * 2 + 2] if len(src.frames) > 1 else src.frames
            bitmaps = self._visual_bitmaps(src.width, src.height, list(frames))
            wanted = 0
        else:
            pcm = np.frombuffer(payload.source.pcm, dtype=np.float32)
            data = pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            bitmaps = [M.mtmd_bitmap_init_from_audio(pcm.shape[0], data)]
            wanted = payload.index
        with self._chunks(bitmaps) as chunks:
            chunk = chunks[wanted]
            n_tokens = int(M.mtmd_input_chunk_get_n_tokens(chunk))
            if n_tokens != span.n_tokens:
                raise ProjectorError(f"mtmd made {n_tokens} tokens where {span.n_tokens} were planned")
            if M.mtmd_encode_chunk(self.ctx, chunk) != 0:
                raise ProjectorError("mtmd could not encode the media")
            out = M.mtmd_get_output_embd(self.ctx)
            return np.ctypeslib.as_array(out, shape=(n_tokens * self.n_embd,)).reshape(n_tokens, self.n_embd).copy()

    def positions(self, span: MediaSpan, start: int, stop: int) -> np.ndarray:
        """Positions of rows [start, stop): section-major (t, y, x, 0) under M-RoPE, else one row."""
        rows = np.arange(start, stop, dtype=np.int32)
        payload = span.payload
        if not self.uses_mrope:
            return span.pos + rows
        if isinstance(payload, VisualChunk):
            t = np.full_like(rows, span.pos)
            y = payload.origin + rows // payload.nx
            x = payload.origin + rows % payload.nx
            return np.concatenate([t, y, x, np.zeros_like(rows)])
        seq = span.pos + rows  # audio: one position per token in every section
        return np.concatenate([seq, seq, seq, seq])


class _LayoutBuilder:
    """Assigns cells and positions piece by piece (HF Qwen-VL get_rope_index semantics)."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector
        self.tokens: list[int] = []
        self.spans: list[MediaSpan] = []
        self.piece_tokens: list[int] = []
        self.pos = 0

    def text(self, tokens: tuple[int, ...]) -> None:
        self.tokens.extend(tokens)
        self.pos += len(tokens)

    def visual(self, item: VisualInput) -> None:
        frames_per_chunk = 2 if len(item.frames) > 1 else 1
        n_tokens, nx, ny = self.projector.visual_grid(item.width, item.height, frames_per_chunk)
        origin, unit, mrope = self.pos, len(self.tokens), self.projector.uses_mrope
        total = 0
        for k in range(item.num_chunks):
            t = item.temporal_positions[k] if k < len(item.temporal_positions) else k
            pos = origin + t if mrope else self.pos
            next_pos = origin + max(t, nx - 1, ny - 1) + 1 if mrope else pos + n_tokens
            key = _key(item.digest, b"v", str((k, t, item.width, item.height)).encode())
            payload = VisualChunk(item, k, nx, ny, origin)
            self._span(n_tokens, pos, next_pos, mrope, key, unit, payload)
            total += n_tokens
        self.piece_tokens.append(total)

    def audio(self, item: AudioInput) -> None:
        unit, total = len(self.tokens), 0
        for j, n_tokens in enumerate(self.projector.audio_windows(len(item.pcm) // 4)):
            key = _key(item.digest, b"a", str(j).encode())
            self._span(n_tokens, self.pos, self.pos + n_tokens, False, key, unit, AudioChunk(item, j))
            total += n_tokens
        self.piece_tokens.append(total)

    def _span(self, n_tokens: int, pos: int, next_pos: int, flat: bool, key: int, unit: int, payload: Any) -> None:
        offset = len(self.tokens)
        self.spans.append(MediaSpan(offset, n_tokens, pos, next_pos, flat, key, unit, payload))
        self.tokens.extend([key] * n_tokens)
        self.pos = next_pos
