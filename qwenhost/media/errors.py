"""The multimodal validation errors, with DashScope's messages verbatim (spec §3.3 Multimodal)."""

from __future__ import annotations

from qwenhost.core.errors import InvalidParameter

INVALID_URL = "The provided URL does not appear to be valid. Ensure it is correctly formatted."
DATA_URI_TOO_LARGE = "Exceeded limit on max bytes per data-uri item : {}'."
FILE_TOO_LARGE = "Multimodal file size is too large"
IMAGE_SIZE = "The image length and width do not meet the model restrictions."
FRAME_RANGE = (
    "The video modality input does not meet the requirements because: the range of sequence images should be (4, {})."
)
VIDEO_TOO_LONG = "The video modality input does not meet the requirements because: The video file is too long."
DOWNLOAD_FAILED = "Failed to download multimodal content."
INPUT_LENGTH = "Range of input length should be [1, {}]"  # spec §3.3; the service's length check uses it too
DOWNLOAD_TIMEOUT = "Download the media resource timed out during the data inspection process."
WRONG_CONTENT_TYPE = "Wrong Content-Type of multimodal url"
# Not in DashScope's catalogue (spec §3.3 has no message for undecodable bytes): our own wording.
UNDECODABLE = "The multimodal content could not be decoded: {}."
# Per-request bounds of our own (DashScope documents no such limit and no message): they name the setting.
TOO_MANY_PARTS = (
    "The request has {} media items (each image, video, audio clip and each frame of a frame list counts "
    "as one); at most {} are accepted (max_media_parts)."
)
TOO_MANY_BYTES = "The media of the request exceed {} bytes in all (max_media_bytes)."


class MediaError(InvalidParameter):
    """A 400 about one media item; raised before the first byte like every request-level error."""


class Stopped(Exception):
    """A decoder gave up because its result is no longer wanted (a sibling part failed, or the client left)."""


def invalid_url() -> MediaError:
    return MediaError(INVALID_URL)


def data_uri_too_large(limit: int) -> MediaError:
    return MediaError(DATA_URI_TOO_LARGE.format(limit))


def too_large() -> MediaError:
    return MediaError(FILE_TOO_LARGE)


def image_size() -> MediaError:
    return MediaError(IMAGE_SIZE)


def frame_range(max_frames: int) -> MediaError:
    return MediaError(FRAME_RANGE.format(max_frames))


def video_too_long() -> MediaError:
    return MediaError(VIDEO_TOO_LONG)


def download_failed() -> MediaError:
    return MediaError(DOWNLOAD_FAILED)


def download_timeout() -> MediaError:
    return MediaError(DOWNLOAD_TIMEOUT)


def wrong_content_type() -> MediaError:
    return MediaError(WRONG_CONTENT_TYPE)


def undecodable(what: str) -> MediaError:
    return MediaError(UNDECODABLE.format(what))


def too_many_parts(count: int, limit: int) -> MediaError:
    return MediaError(TOO_MANY_PARTS.format(count, limit))


def too_many_bytes(limit: int) -> MediaError:
    return MediaError(TOO_MANY_BYTES.format(limit))


def input_too_long(limit: int) -> MediaError:
    return MediaError(INPUT_LENGTH.format(limit))
