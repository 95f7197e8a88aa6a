"""The ``local`` provider: the operator's documents in one SQLite file, searched with FTS5 and BM25.

Passages live in an FTS5 table with a shadow column of CJK bigrams (fts.py); the title weighs more than the
body (bm25 weights). Each call opens its own connection, so `qwenhost index add` on a running server is seen
by the next search and no connection crosses threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qwenhost.tools.search import documents
from qwenhost.tools.search.fts import build_query, segment
from qwenhost.tools.search.provider import Hit

log = logging.getLogger("qwenhost.search")

SNIPPET_CHARS = 600
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, source TEXT UNIQUE NOT NULL, title TEXT NOT NULL, url TEXT NOT NULL,
    added_at REAL NOT NULL, passages INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5(
    title, body, seg, url UNINDEXED, published UNINDEXED, doc_id UNINDEXED, tokenize = 'unicode61');
"""


@dataclass(frozen=True, slots=True)
class IndexedDocument:
    id: int
    source: str
    title: str
    passages: int
    added_at: float


class LocalIndex:
    name = "local"

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()

    def is_usable(self) -> bool:
        return self.path.is_file()

    async def search(self, query: str, *, k: int) -> list[Hit]:
        try:
            return await asyncio.to_thread(self.search_now, query, k)
        except sqlite3.Error as exc:  # a damaged or locked file: no hits, and the operator is told
            log.warning("local search index %s: %s", self.path, exc)
            return []

    def search_now(self, query: str, k: int) -> list[Hit]:
        expression = build_query(query)
        if expression is None or not self.is_usable():
            return []
        with self._connect() as db:
            rows = db.execute(
                "SELECT title, url, body, published FROM passages WHERE passages MATCH ? "
                "ORDER BY bm25(passages, 5.0, 1.0, 1.0) LIMIT ?",
                (expression, k),
            ).fetchall()
        return [Hit(t, u, b[:SNIPPET_CHARS], p, self.name) for t, u, b, p in rows]

    # -- the CLI's side --------------------------------------------------------------------------
    def add(self, paths: list[Path]) -> list[IndexedDocument]:
        """Index the files (directories walked); a file indexed before is replaced."""
        docs = [doc for path in documents.files(paths) for doc in documents.read(path)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            for doc in docs:
                self._remove(db, doc.source)
                chunks = documents.passages(doc.text) or [""]
                cur = db.execute(
                    "INSERT INTO documents (source, title, url, added_at, passages) VALUES (?, ?, ?, ?, ?)",
                    (doc.source, doc.title, doc.url, time.time(), len(chunks)),
                )
                db.executemany(
                    "INSERT INTO passages (title, body, seg, url, published, doc_id) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (doc.title, c, segment(f"{doc.title} {c}"), doc.url, doc.published, cur.lastrowid)
                        for c in chunks
                    ],
                )
        return [d for d in self.entries() if d.source in {doc.source for doc in docs}]

    def entries(self) -> list[IndexedDocument]:
        if not self.is_usable():
            return []
        with self._connect() as db:
            rows = db.execute("SELECT id, source, title, passages, added_at FROM documents ORDER BY id").fetchall()
        return [IndexedDocument(*row) for row in rows]

    def remove(self, sources: list[str]) -> list[str]:
        """Documents removed, named by their source as `index list` shows it or by id; a directory names
        every document under it."""
        removed: list[str] = []
        if not self.is_usable():
            return removed
        with self._connect() as db:
            for wanted in sources:
                for doc in self.entries():
                    if wanted in (doc.source, str(doc.id)) or doc.source.startswith(wanted.rstrip("/") + "/"):
                        self._remove(db, doc.source)
                        removed.append(doc.source)
        return removed

    @staticmethod
    def _remove(db: sqlite3.Connection, source: str) -> None:
        row = db.execute("SELECT id FROM documents WHERE source = ?", (source,)).fetchone()
        if row is not None:
            db.execute("DELETE FROM passages WHERE doc_id = ?", (row[0],))
            db.execute("DELETE FROM documents WHERE id = ?", (row[0],))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            db.executescript(_SCHEMA)
            with db:  # one transaction: committed, or rolled back on an error
                yield db
        finally:
            db.close()
