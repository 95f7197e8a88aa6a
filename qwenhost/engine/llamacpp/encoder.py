"""The media encoder thread, the embeddings it produced (shared by content key), and the feed to the engine.

The engine thread asks for a span's embeddings and keeps decoding text; the encoder thread runs the
vision/audio tower (mtmd) and posts the result back to the engine loop's inbox. Identical media
wanted by several requests at once (same key) is encoded once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qwenhost.engine.llamacpp.plan import MediaSlice
from qwenhost.engine.llamacpp.projector import Projector
from qwenhost.engine.llamacpp.sequence import Group
from qwenhost.engine.protocol import MediaSpan

log = logging.getLogger("qwenhost.media")

User = tuple[str, int]  # (request id, span index)
Done = Callable[[int, np.ndarray | None], None]  # (key, embeddings or None on failure); any thread


@dataclass
class EncoderStats:
    chunks: int = 0
    tokens: int = 0
    failures: int = 0
    seconds: float = 0.0


@dataclass
class EmbeddingStore:
    """Embeddings by content key with the spans that use them; lives on the engine thread."""

    arrays: dict[int, np.ndarray] = field(default_factory=dict)
    users: dict[int, set[User]] = field(default_factory=dict)
    in_flight: set[int] = field(default_factory=set)

    def want(self, key: int, user: User) -> str:
        """Register ``user``; 'ready' if the array is here, 'wait' if it is being encoded, else 'encode'."""
        self.users.setdefault(key, set()).add(user)
        if key in self.arrays:
            return "ready"
        if key in self.in_flight:
            return "wait"
        self.in_flight.add(key)
        return "encode"

    def deliver(self, key: int, array: np.ndarray | None) -> set[User]:
        self.in_flight.discard(key)
        users = self.users.get(key, set())
        if array is not None and users:
            self.arrays[key] = array
        return set(users)

    def release(self, key: int, user: User) -> None:
        users = self.users.get(key)
        if users is None:
            return
        users.discard(user)
        if not users:
            self.users.pop(key, None)
            self.arrays.pop(key, None)

    def rows(self, key: int, start: int, stop: int) -> np.ndarray:
        return self.arrays[key][start:stop]


class MediaEncoder:
    def __init__(self, projector: Projector, done: Done) -> None:
        self.projector = projector
        self.stats = EncoderStats()
        self._done = done
        self._jobs: queue.Queue[MediaSpan | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="qwenhost-media-encoder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, span: MediaSpan) -> None:
        self._jobs.put(span)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            span = self._jobs.get()
            if span is None:
                return
            started = time.perf_counter()
            try:
                array = self.projector.encode(span)
            except Exception:
                log.exception("media encoding failed")
                self.stats.failures += 1
                self._done(span.key, None)
                continue
            self.stats.chunks += 1
            self.stats.tokens += span.n_tokens
            self.stats.seconds += time.perf_counter() - started
            self._done(span.key, array)


class MediaFeed:
    """Between the engine thread and the encoder: who wants which span's embeddings, and their rows.
    Lives on the engine thread; ``done`` is the engine's inbox (called from the encoder thread)."""

    def __init__(self, projector: Projector, done: Done) -> None:
        self.projector = projector
        self.encoder = MediaEncoder(projector, done)
        self._store = EmbeddingStore()

    def want(self, group: Group, index: int) -> bool:
        """Ask for span ``index`` of ``group``; True when its embeddings are here already."""
        span = group.request.media[index]
        wanted = self._store.want(span.key, (group.request_id, index))
        if wanted == "encode":
            self.encoder.submit(span)
        return wanted == "ready"

    def deliver(self, key: int, array: np.ndarray | None) -> set[User]:
        """The encoder finished ``key`` (None: it failed); returns the spans that were waiting for it."""
        return self._store.deliver(key, array)

    def slice_input(self, piece: MediaSlice) -> tuple[np.ndarray, np.ndarray]:
        """The embedding rows of ``piece`` and their positions (n_pos_per_embd x rows)."""
        span = piece.group.request.media[piece.index]
        rows = self._store.rows(span.key, piece.start, piece.stop)
        return rows, self.projector.positions(span, piece.start, piece.stop)

    def release_span(self, group: Group, index: int) -> None:
        self._store.release(group.request.media[index].key, (group.request_id, index))

    def release(self, group: Group) -> None:
        for index in range(len(group.request.media)):
            self.release_span(group, index)
