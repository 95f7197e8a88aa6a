"""``X-DashScope-OssResourceResolve: enable`` -> media/oss.py's per-request switch, for both dialects."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenhost.media.oss import HEADER, OSS_RESOLVE

_HEADER = HEADER.encode()


class OssResolveHeader:
    """Turns oss:// resolution on for the request that asks for it, and only for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        enabled = any(k.lower() == _HEADER and v.strip().lower() == b"enable" for k, v in scope.get("headers", ()))
        token = OSS_RESOLVE.set(enabled)
        try:
            await self.app(scope, receive, send)
        finally:
            OSS_RESOLVE.reset(token)
