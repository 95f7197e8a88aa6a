"""Operator limits for fetching and decoding media: a small frozen config handed down from main.py."""

from __future__ import annotations

from dataclasses import dataclass

DATA_URI_LIMIT = 10_485_760  # DashScope: a base64 data URI item, decoded (spec §4.11)
MEDIA_PARTS_LIMIT = 512  # the longest frame list DashScope accepts (Qwen2.5-VL / Qwen3-VL, spec §4.11)
MEDIA_BYTES_LIMIT = 256 * 1024 * 1024  # one largest video (150 MiB) plus room for images beside it


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    allow_private_urls: bool = False  # SSRF guard: loopback, private, link-local … are refused by default
    allowed_hosts: tuple[str, ...] = ()  # host names always allowed, even when they resolve privately
    fetch_timeout_s: float = 30.0
    max_redirects: int = 3
    max_data_uri_bytes: int = DATA_URI_LIMIT
    max_image_bytes: int = 10 * 1024 * 1024  # image URL limit (spec §4.11)
    max_video_bytes: int = 150 * 1024 * 1024
    max_audio_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000  # decompression-bomb guard, checked before pixels are decoded
    max_video_seconds: float = 600.0
    max_audio_seconds: float = 600.0
    max_video_frames: int = 768  # sampled frames per video file (qwen-vl-utils FPS_MAX_FRAMES)
    max_image_tokens: int = 16384  # per image or frame; protects memory (spec: 4–16384 tokens per image)
    max_concurrent_fetches: int = 8
    max_media_parts: int = MEDIA_PARTS_LIMIT  # per request: each image, video, audio clip and listed frame
    max_media_bytes: int = MEDIA_BYTES_LIMIT  # per request: fetched or base64-decoded bytes of all parts
    max_concurrent_decodes: int = 4  # decoder threads shared by all requests (kept off the event loop)
    user_agent: str = "qwenhost-fetch (DashScopeUserBot-compatible)"
    video_containers: tuple[str, ...] = ("mov", "mp4", "m4a", "3gp", "matroska", "webm", "avi", "mpeg", "mpegts", "flv")
    audio_containers: tuple[str, ...] = ("wav", "mp3", "flac", "ogg", "mov", "mp4", "m4a", "aac", "matroska", "webm")

    def __post_init__(self) -> None:
        # A zero or negative bound would refuse every media request (or start no decoder): a mistake.
        for name in ("max_media_parts", "max_media_bytes", "max_concurrent_decodes", "max_concurrent_fetches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"[media] {name} must be a whole number of at least 1, not {value!r}")

    def limit_for(self, kind: str) -> int:
        return {"image": self.max_image_bytes, "audio": self.max_audio_bytes}.get(kind, self.max_video_bytes)
