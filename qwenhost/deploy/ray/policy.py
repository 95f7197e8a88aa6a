"""The prefix-affinity routing policy, pure (no Ray): which replica most likely holds a prompt's prefix.

Like Ray Serve LLM's PrefixCacheAffinityRouter and sglang-router's cache_aware policy, it keeps an
approximate picture of each replica's prefix cache from what it sent where: the routing text is cut into
fixed-size character blocks, each block hashed together with everything before it (a hash chain), and a
replica "holds" a chain link once a request carrying it was sent there. The longest chain match wins;
when the replicas' queues are imbalanced, or nothing matches, the least-loaded replica (then the one
holding the fewest blocks, so new prefixes spread out) is first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    block_chars: int = 256  # DashScope's implicit cache starts at 256 tokens; chars are a cheap stand-in
    max_blocks: int = 256  # of one request's text (64 Ki chars): longer prompts match on their start only
    max_blocks_per_replica: int = 100_000  # the per-replica index, least recently routed out first
    imbalanced_threshold: int = 4  # queue-length spread past which load wins over affinity
    min_match_ratio: float = 0.1  # a match shorter than this share of the prompt is no match (as Ray's)

    def __post_init__(self) -> None:
        if self.block_chars < 1 or self.max_blocks < 1 or self.max_blocks_per_replica < 1:
            raise ValueError("block_chars, max_blocks and max_blocks_per_replica must be at least 1")
        if self.imbalanced_threshold < 0 or not 0.0 <= self.min_match_ratio <= 1.0:
            raise ValueError("imbalanced_threshold must be 0 or more and min_match_ratio within 0..1")


def routing_text(body: object) -> str:
    """What a request's cached prefix is made of, from either dialect's JSON body: the model name, then
    each message's role and text (compatible mode ``messages``; native ``input.messages`` or
    ``input.prompt``). Anything unreadable gives "" (no affinity; the replica validates the body)."""
    if not isinstance(body, Mapping):
        return ""
    model = body.get("model")
    parts = [model if isinstance(model, str) else ""]
    source: Any = body.get("input") if isinstance(body.get("input"), Mapping) else body
    prompt = source.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    messages = source.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, Mapping):
            parts.append(f"\n{message.get('role', '')}:")
            parts.append(_text_of(message.get("content")))
    return "".join(parts)


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only the text ones say what the prefix is
        return "".join(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


class PrefixAffinityPolicy:
    """Ranks replicas for one request; ``record`` what was routed where. Not thread-safe: one router's loop."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self._held: dict[str, OrderedDict[int, None]] = {}  # replica -> chain hashes, oldest first

    def chain(self, text: str) -> list[int]:
        """The hash of every complete block together with all before it (a partial last block is left out:
        it is the part most likely to differ between requests)."""
        size, hashes, previous = self.config.block_chars, [], 0
        for start in range(0, min(len(text) // size, self.config.max_blocks) * size, size):
            previous = hash((previous, text[start : start + size]))
            hashes.append(previous)
        return hashes

    def match_blocks(self, replica: str, chain: list[int]) -> int:
        """How many leading blocks of ``chain`` the replica holds (binary search: a held link implies its
        predecessors were sent there too, unless evicted, which only shortens the match)."""
        held = self._held.get(replica)
        if not held:
            return 0
        low, high = 0, len(chain)
        while low < high:
            mid = (low + high + 1) // 2
            if chain[mid - 1] in held:
                low = mid
            else:
                high = mid - 1
        return low

    def rank(self, text: str, queue_lengths: Mapping[str, int]) -> list[str]:
        """Replica ids, most preferred first."""
        if not queue_lengths:
            return []
        by_load = sorted(queue_lengths, key=lambda r: (queue_lengths[r], len(self._held.get(r, ())), r))
        spread = max(queue_lengths.values()) - min(queue_lengths.values())
        chain = self.chain(text)
        if spread > self.config.imbalanced_threshold or not chain:
            return by_load
        matches = {r: self.match_blocks(r, chain) for r in queue_lengths}
        best = max(by_load, key=lambda r: matches[r])  # max keeps the first: least loaded among equals
        if matches[best] == 0 or matches[best] < self.config.min_match_ratio * len(chain):
            return by_load
        return [best, *(r for r in by_load if r != best)]

    def record(self, text: str, replica: str) -> None:
        held = self._held.setdefault(replica, OrderedDict())
        for link in self.chain(text):
            held[link] = None
            held.move_to_end(link)
        while len(held) > self.config.max_blocks_per_replica:
            held.popitem(last=False)

    def retain(self, replicas: Iterable[str]) -> None:
        """Forget replicas that are gone (a dead replica's cache died with it)."""
        keep = set(replicas)
        for replica in [r for r in self._held if r not in keep]:
            del self._held[replica]

    def blocks_held(self, replica: str) -> int:
        return len(self._held.get(replica, ()))
