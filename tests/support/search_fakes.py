"""A loopback fake of SearXNG, Brave and Tavily answering with their real JSON shapes; it can fail or stall
on demand, and records what it was asked (tests only target 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SEARXNG = {
    "query": "q",
    "number_of_results": 0,
    "results": [
        {
            "url": "https://searx.example/capybara",
            "title": "Fake result from SearXNG",
            "content": "Capybaras are the largest living rodents.",
            "engine": "duckduckgo",
            "score": 1.0,
            "publishedDate": "2026-11-30T00:00:00",
        }
    ],
    "answers": [],
    "suggestions": [],
    "infoboxes": [],
}
BRAVE = {
    "type": "search",
    "query": {"original": "q"},
    "web": {
        "type": "search",
        "results": [
            {
                "title": "Fake result from Brave",
                "url": "https://brave.example/a",
                "description": "Brave <b>says</b> hi.",
                "page_age": "2026-11-29T10:00:00",
                "profile": {"name": "Example"},
            },
            {"title": "Second", "url": "https://brave.example/b", "description": "more"},
        ],
    },
}
TAVILY = {
    "query": "q",
    "answer": None,
    "results": [
        {
            "title": "Fake result from Tavily",
            "url": "https://tavily.example/x",
            "content": "Tavily extracted text.",
            "score": 0.9,
            "raw_content": None,
            "published_date": "2026-11-28",
        },
    ],
    "response_time": 0.5,
}


@dataclass
class FakeSearch:
    port: int = 0
    delay_s: float = 0.0  # each answer waits this long (a provider timing out)
    fail: list[int] = field(default_factory=list)  # statuses to answer with first, one per request
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(fake: FakeSearch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, body: Any) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append(
                {"path": parts.path, "query": parse_qs(parts.query), "json": payload, "headers": dict(self.headers)}
            )
            if fake.delay_s:
                time.sleep(fake.delay_s)
            status = fake.fail.pop(0) if fake.fail else 200
            data = json.dumps(body if status == 200 else {"error": "nope"}).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (a timeout, a cancelled search)

        def do_GET(self) -> None:
            if self.path.startswith("/search"):
                self._answer(SEARXNG)
            elif self.path.startswith("/res/v1/web/search"):
                self._answer(BRAVE)
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            self._answer(TAVILY) if self.path.startswith("/search") else self.send_error(404)

    return Handler


@contextlib.contextmanager
def fake_search() -> Iterator[FakeSearch]:
    fake = FakeSearch()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
