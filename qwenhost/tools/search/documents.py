"""The operator's files -> documents -> passages for the local index: text, Markdown, HTML and JSONL."""

from __future__ import annotations

import html.parser
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
PASSAGE_CHARS = 800
OVERLAP_CHARS = 100
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # the file (JSONL: file#line), as `qwenhost index list` shows it
    title: str
    url: str
    text: str
    published: str | None = None


class DocumentError(ValueError):
    """A file that cannot be indexed (unknown type, too large, malformed JSONL)."""


def files(paths: list[Path]) -> Iterator[Path]:
    """The indexable files named, directories walked (sorted); an unknown file type named directly is an error."""
    for path in paths:
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.suffix.lower() in SUFFIXES:
            yield path
        else:
            raise DocumentError(f"{path}: not a text, Markdown, HTML or JSONL file ({', '.join(SUFFIXES)})")


def read(path: Path) -> list[Document]:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DocumentError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    kind = SUFFIXES[path.suffix.lower()]
    raw = path.read_text("utf-8", errors="replace")
    url = path.resolve().as_uri()
    if kind == "jsonl":
        return list(_jsonl(path, raw))
    if kind == "html":
        parser = _Text()
        parser.feed(raw)
        return [Document(str(path), parser.title.strip() or path.name, url, parser.text())]
    return [Document(str(path), _heading(raw) or path.name, url, raw)]


def passages(text: str, size: int = PASSAGE_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Windows of about ``size`` characters overlapping by ``overlap``, cut at whitespace where there is one."""
    text = " ".join(text.split())
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            end = cut if cut > 0 else end
        out.append(text[start:end])
        if end >= len(text):
            break
        start = max(start + 1, end - overlap)
    return out


def _heading(text: str) -> str | None:
    for line in text.splitlines()[:20]:
        if line.startswith("# "):
            return line[2:].strip()
    return None


def _jsonl(path: Path, raw: str) -> Iterator[Document]:
    """One document per line: ``text`` (or ``content``/``body``), optional ``title``, ``url``, ``published``."""
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise DocumentError(f"{path}:{number}: not a JSON object") from None
        text = next(
            (item[k] for k in ("text", "content", "body") if isinstance(item, dict) and isinstance(item.get(k), str)),
            None,
        )
        if text is None:
            raise DocumentError(f"{path}:{number}: needs a string field text, content or body")
        where = f"{path}#{number}"
        title = item.get("title") if isinstance(item.get("title"), str) else where
        url = item.get("url") if isinstance(item.get("url"), str) else f"{path.resolve().as_uri()}#{number}"
        published = item.get("published") if isinstance(item.get("published"), str) else None
        yield Document(where, title, url, text, published)


class _Text(html.parser.HTMLParser):
    """Visible text and <title>; script and style skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self._parts: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self._parts.append(data)

    def text(self) -> str:
        return " ".join(" ".join(self._parts).split())


def html_text(raw: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page (agent_max reads pages with it)."""
    parser = _Text()
    parser.feed(raw)
    return parser.title.strip(), parser.text()
