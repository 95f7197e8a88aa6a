"""The local FTS5 index: English and CJK (bigram shadow column) found, title weighed over body, files of each
type read, and user text never becoming FTS5 syntax (fuzzed)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwenhost.tools.search.documents import DocumentError
from qwenhost.tools.search.fts import build_query, segment
from qwenhost.tools.search.local import LocalIndex


@pytest.fixture
def index(tmp_path: Path) -> LocalIndex:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "weather.md").write_text("# 杭州天气\n\n杭州天气怎么样？今天气温很高，适合去西湖。", "utf-8")
    (docs / "llama.txt").write_text("llama.cpp loads GGUF files and serves an OpenAI-compatible API.", "utf-8")
    (docs / "page.html").write_text(
        "<html><head><title>Capybara facts</title><script>var x = 'gguf';</script></head>"
        "<body><p>The capybara festival is on Tuesday.</p></body></html>",
        "utf-8",
    )
    (docs / "notes.jsonl").write_text(
        '{"title": "Thinking models", "text": "Qwen3 thinks before it answers.", "url": "https://q.example/t"}\n',
        "utf-8",
    )
    ix = LocalIndex(str(tmp_path / "index.sqlite3"))
    ix.add([docs])
    return ix


def titles(index: LocalIndex, query: str) -> list[str]:
    return [h.title for h in asyncio.run(index.search(query, k=5))]


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("杭州天气怎么样", "杭州天气"),
        ("气温", "杭州天气"),  # a two-character word: unicode61 alone never finds it
        ("杭", "杭州天气"),  # one character: a prefix of the bigrams
        ("When is the capybara festival?", "Capybara facts"),
        ("gguf", "llama.txt"),  # the HTML page's script is not text
        ("thinking", "Thinking models"),
    ],
)
def test_finds(index: LocalIndex, query: str, title: str) -> None:
    assert titles(index, query)[0] == title


def test_jsonl_url_and_listing(index: LocalIndex) -> None:
    hit = asyncio.run(index.search("Qwen3", k=1))[0]
    assert hit.url == "https://q.example/t" and hit.source == "local"
    assert len(index.entries()) == 4


def test_add_again_replaces_and_remove_forgets(index: LocalIndex, tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "llama.txt"
    doc.write_text("now about ollama only", "utf-8")
    index.add([doc])
    assert titles(index, "gguf") == [] and titles(index, "ollama") == ["llama.txt"]
    assert index.remove([str(doc)]) == [str(doc)]
    assert titles(index, "ollama") == [] and len(index.entries()) == 3


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(DocumentError, match="not a text, Markdown, HTML or JSONL"):
        LocalIndex(str(tmp_path / "i.sqlite3")).add([tmp_path / "x.pdf"])


def test_a_missing_index_is_not_usable_and_finds_nothing(tmp_path: Path) -> None:
    ix = LocalIndex(str(tmp_path / "none.sqlite3"))
    assert not ix.is_usable() and asyncio.run(ix.search("x", k=3)) == []


def test_segment_and_query_shapes() -> None:
    assert segment("ab 杭州天气 cd") == "杭州 州天 天气"
    assert build_query('a" OR NEAR(x') == '"a" OR "OR" OR "NEAR" OR "x"'
    assert build_query("  ?! ") is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_user_text_becomes_fts_syntax(text: str) -> None:
    expression = build_query(text)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, seg)")
    db.execute("INSERT INTO t VALUES ('some words 杭州', '杭州')")
    if expression is not None:
        db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (expression,)).fetchall()  # never raises
