"""The playground page: qwenhost/web's static files at ``/`` and ``/web/…``, as they are, under a strict CSP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

INDEX = "index.html"
# The page's files and their types; nothing else under /web is served.
ASSETS = {
    INDEX: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "wire.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
ASSET_PATHS = frozenset(f"/web/{name}" for name in ASSETS if name != INDEX)
MAX_ASSET_BYTES = 256 * 1024  # the page is small by design; a bigger file is a packaging mistake

# Same-origin scripts, styles and API calls only: no inline code, no third party, no framing. Images may be
# data: URIs (the attached image's preview) and the favicon is an empty data: URI (no /favicon.ico 404).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: an upgraded server serves its own page at once
}


def _read_assets() -> dict[str, bytes]:
    folder = resources.files("qwenhost.web")
    files = {name: folder.joinpath(name).read_bytes() for name in ASSETS}
    for name, data in files.items():
        if len(data) > MAX_ASSET_BYTES:
            raise RuntimeError(f"qwenhost/web/{name} is {len(data)} bytes, over the {MAX_ASSET_BYTES}-byte limit")
    return files


class WebRoute:
    """Holds the files read once at start-up (they are package data and never change while serving)."""

    def __init__(self) -> None:
        self._files = _read_assets()

    def routes(self) -> list[Route]:
        routes = [Route("/", self._handler(INDEX), methods=["GET"])]
        routes += [Route(path, self._handler(path.removeprefix("/web/")), methods=["GET"]) for path in ASSET_PATHS]
        return routes

    def _handler(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        data, media_type = self._files[name], ASSETS[name]

        async def handle(request: Request) -> Response:
            return Response(data, media_type=media_type, headers=HEADERS)

        return handle
