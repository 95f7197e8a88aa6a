"""constrain/cache.py: compiled grammars kept by key, least recently used dropped beyond the bound; and
CompiledGrammar.after(), which advances a copy so that a cached grammar is shared safely."""

from __future__ import annotations

import threading

import pytest

from qwenhost.constrain.cache import MAX_COMPILED_GRAMMARS, GrammarCache
from qwenhost.constrain.grammar import json_grammar
from qwenhost.constrain.matcher import CompiledGrammar
from tests.support.grammar_vocab import ByteVocab, byte_vocab


@pytest.fixture(scope="module")
def vocab() -> ByteVocab:
    return byte_vocab()


def compiled(vocab: ByteVocab, schema: dict[str, object] | None = None) -> CompiledGrammar:
    return CompiledGrammar(vocab.tokenizer, json_grammar(schema or {"type": "object"}))


def test_hits_misses_and_the_least_recently_used_goes_first(vocab: ByteVocab) -> None:
    cache = GrammarCache(max_entries=2)
    a, b, c = (compiled(vocab) for _ in range(3))
    assert cache.get("a") is None
    assert cache.put("a", a) is a and cache.put("b", b) is b
    assert cache.get("a") is a  # a is now the most recent
    cache.put("c", c)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    assert (cache.hits, cache.misses) == (3, 2)


def test_the_first_compile_of_a_key_is_kept(vocab: ByteVocab) -> None:
    cache = GrammarCache()
    first, second = compiled(vocab), compiled(vocab)
    assert cache.put("k", first) is first
    assert cache.put("k", second) is first  # a thread that lost the race uses the kept one


def test_a_zero_bound_keeps_nothing(vocab: ByteVocab) -> None:
    cache = GrammarCache(max_entries=0)
    grammar = compiled(vocab)
    assert cache.put("k", grammar) is grammar and cache.get("k") is None and len(cache) == 0
    with pytest.raises(ValueError):
        GrammarCache(max_entries=-1)
    assert GrammarCache().max_entries == MAX_COMPILED_GRAMMARS


def test_threads_share_one_cache(vocab: ByteVocab) -> None:
    cache = GrammarCache(max_entries=8)
    grammars = [compiled(vocab) for _ in range(16)]

    def work(offset: int) -> None:
        for i in range(200):
            key = str((i + offset) % 16)
            if cache.get(key) is None:
                cache.put(key, grammars[int(key)])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 8 and cache.hits + cache.misses == 800


def test_after_advances_a_copy_and_leaves_the_grammar_as_it_was(vocab: ByteVocab) -> None:
    grammar = compiled(vocab, {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    advanced = grammar.after('{"a": ')
    assert advanced is not None and advanced is not grammar
    state = advanced()
    for token in vocab.tokenize("12}"):
        state.consume(token)
    assert state.is_finished()
    fresh = grammar()  # the original still starts at the beginning
    assert fresh.forced_tokens() == vocab.tokenize('{"a": ')
    assert grammar.after("not json") is None
