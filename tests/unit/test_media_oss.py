"""oss:// media URLs: read from the upload store only when the request enables resolution, within limits."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from qwenhost.media import errors
from qwenhost.media.fetch import ByteBudget, Fetcher
from qwenhost.media.policy import MediaPolicy
from qwenhost.ops.uploads import ObjectStore


def fetch(fetcher: Fetcher, url: str, *, resolve: bool, budget: ByteBudget | None = None) -> bytes:
    async def go() -> bytes:
        try:
            return await fetcher.fetch(url, "image", budget, resolve_oss=resolve)
        finally:
            await fetcher.close()

    return asyncio.run(go())


@pytest.fixture
def stored(tmp_path: Path) -> tuple[ObjectStore, str]:
    store = ObjectStore(tmp_path, max_file_bytes=100, capacity_bytes=1000, expiry_s=60.0)
    key = store.issue().upload_dir + "/dog.png"
    store.put(key, io.BytesIO(b"0123456789"), forbid_overwrite=True)
    return store, key


def test_an_uploaded_object_is_read_with_the_header(stored: tuple[ObjectStore, str]) -> None:
    store, key = stored
    budget = ByteBudget(1000)
    assert fetch(Fetcher(MediaPolicy(), objects=store), f"oss://{key}", resolve=True, budget=budget) == b"0123456789"
    assert budget.used == 10  # counted in the request's max_media_bytes


def test_without_the_header_oss_is_an_invalid_url(stored: tuple[ObjectStore, str]) -> None:
    store, key = stored
    with pytest.raises(errors.MediaError) as err:
        fetch(Fetcher(MediaPolicy(), objects=store), f"oss://{key}", resolve=False)
    assert err.value.message == errors.INVALID_URL


def test_without_a_store_oss_is_an_invalid_url(stored: tuple[ObjectStore, str]) -> None:
    _, key = stored
    with pytest.raises(errors.MediaError) as err:
        fetch(Fetcher(MediaPolicy()), f"oss://{key}", resolve=True)
    assert err.value.message == errors.INVALID_URL


@pytest.mark.parametrize("suffix", ["/other.png", "/../../../etc/passwd", ""])
def test_unknown_keys_cannot_be_downloaded(stored: tuple[ObjectStore, str], suffix: str) -> None:
    store, key = stored
    url = "oss://" + key.rpartition("/")[0] + suffix
    with pytest.raises(errors.MediaError) as err:
        fetch(Fetcher(MediaPolicy(), objects=store), url, resolve=True)
    assert err.value.message == errors.DOWNLOAD_FAILED


def test_an_object_over_the_kind_limit_is_too_large(stored: tuple[ObjectStore, str]) -> None:
    store, key = stored
    with pytest.raises(errors.MediaError) as err:
        fetch(Fetcher(MediaPolicy(max_image_bytes=9), objects=store), f"oss://{key}", resolve=True)
    assert err.value.message == errors.FILE_TOO_LARGE
