"""Compiled grammars kept between requests: a bounded, thread-safe LRU keyed by what the grammar depends on."""

from __future__ import annotations

import threading
from collections import OrderedDict

from qwenhost.constrain.matcher import CompiledGrammar

# Agents resend the same tools and schemas on every turn; a compile costs milliseconds (5 ms for five
# tools on the embedded model's 49k vocabulary) to seconds (large schemas). 64 compiled five-tool grammars
# took 14 MiB there; beyond the bound the least recently used goes first.
MAX_COMPILED_GRAMMARS = 64


class GrammarCache:
    """Compiled grammars by key, the least recently used dropped beyond ``max_entries``; thread-safe.

    Only grammars that compiled are put, so a bad schema is checked (and refused) on every request.
    Two threads that miss the same key at once may both compile it; ``put`` keeps the first."""

    def __init__(self, max_entries: int = MAX_COMPILED_GRAMMARS) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CompiledGrammar | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: str, grammar: CompiledGrammar) -> CompiledGrammar:
        """Keep ``grammar`` under ``key`` (or the one already there) and return what is kept."""
        if self.max_entries == 0:
            return grammar
        with self._lock:
            kept = self._entries.setdefault(key, grammar)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return kept

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
