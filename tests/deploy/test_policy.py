"""The prefix-affinity policy without Ray: longest match wins, new prefixes spread, load wins when imbalanced."""

from __future__ import annotations

import pytest

from qwenhost.deploy.ray.policy import PolicyConfig, PrefixAffinityPolicy, routing_text

BLOCK = 256


def _doc(i: int, blocks: int = 8) -> str:
    return "".join(f"doc{i}-block{b}-".ljust(BLOCK, ".") for b in range(blocks))


IDLE = {"a": 0, "b": 0}


def test_repeats_stick_to_the_replica_that_got_the_prefix_and_new_prefixes_spread() -> None:
    policy = PrefixAffinityPolicy()
    placed: dict[int, str] = {}
    for i in range(6):  # first sends: each goes to the replica holding fewer blocks
        placed[i] = policy.rank(_doc(i) + "question", IDLE)[0]
        policy.record(_doc(i) + "question", placed[i])
    assert sorted(placed.values()) == ["a", "a", "a", "b", "b", "b"]
    for round_ in range(4):
        for i in (3, 0, 5, 1, 4, 2):
            text = _doc(i) + f"another question {round_}"
            first = policy.rank(text, IDLE)[0]
            assert first == placed[i]
            policy.record(text, first)


def test_the_longest_match_wins() -> None:
    policy = PrefixAffinityPolicy()
    shared = _doc(1, blocks=4)
    policy.record(shared + _doc(2, blocks=2), "a")  # shares 4 blocks with the request
    policy.record(shared + _doc(3, blocks=8)[: 2 * BLOCK] + _doc(4, blocks=2), "b")  # shares 6
    request = shared + _doc(3, blocks=8)
    assert policy.match_blocks("a", policy.chain(request)) == 4
    assert policy.match_blocks("b", policy.chain(request)) == 6
    assert policy.rank(request, IDLE) == ["b", "a"]


def test_imbalance_sends_the_request_to_the_least_loaded_replica() -> None:
    policy = PrefixAffinityPolicy(PolicyConfig(imbalanced_threshold=2))
    policy.record(_doc(1), "a")
    assert policy.rank(_doc(1), {"a": 2, "b": 0})[0] == "a"  # within the threshold: affinity
    assert policy.rank(_doc(1), {"a": 3, "b": 0}) == ["b", "a"]  # past it: load


def test_a_short_match_is_no_match() -> None:
    policy = PrefixAffinityPolicy(PolicyConfig(min_match_ratio=0.5))
    policy.record(_doc(1, blocks=2), "a")
    policy.record(_doc(9, blocks=1), "b")
    request = _doc(1, blocks=2) + _doc(2, blocks=6)  # 2 of 8 blocks match on a: below half
    assert policy.rank(request, IDLE)[0] == "b"  # fewest blocks held
    assert policy.rank(_doc(1, blocks=3), IDLE)[0] == "a"  # 2 of 3


def test_a_gone_replica_is_forgotten_and_the_index_is_bounded() -> None:
    policy = PrefixAffinityPolicy(PolicyConfig(max_blocks_per_replica=5))
    policy.record(_doc(1), "a")
    assert policy.blocks_held("a") == 5  # 8 blocks sent, the 5 most recent kept
    policy.retain(["b"])
    assert policy.blocks_held("a") == 0
    assert policy.rank(_doc(1), {"b": 0}) == ["b"]
    assert policy.rank(_doc(1), {}) == []


def test_short_texts_have_no_affinity() -> None:
    policy = PrefixAffinityPolicy()
    policy.record("hi", "a")
    assert policy.chain("hi") == [] and policy.rank("hi", {"a": 1, "b": 0}) == ["b", "a"]


def test_routing_text_reads_both_dialects() -> None:
    compat = {"model": "qwen-plus", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}
    native = {"model": "qwen-plus", "input": {"messages": compat["messages"]}}
    parts = {
        "model": "qwen-plus",
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [{"type": "text", "text": "U"}, {"type": "image_url", "image_url": {}}]},
        ],
    }
    assert routing_text(compat) == routing_text(native) == routing_text(parts) == "qwen-plus\nsystem:S\nuser:U"
    assert routing_text({"model": "qwen-plus", "input": {"prompt": "P"}}) == "qwen-plusP"
    assert routing_text([1, 2]) == routing_text({"messages": "nope"}) == routing_text(None) == ""


@pytest.mark.parametrize("field", ["block_chars", "max_blocks", "max_blocks_per_replica"])
def test_config_refuses_zero_sizes(field: str) -> None:
    with pytest.raises(ValueError):
        PolicyConfig(**{field: 0})
