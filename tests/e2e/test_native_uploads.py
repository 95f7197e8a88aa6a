"""Local files through the real ``dashscope`` SDK's upload-policy flow (getPolicy, the /oss-upload sink,
oss:// URLs) on the tiny vision fixture, and oss:// URLs in compatible mode."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_multimodal import png, serve
from tests.e2e.test_native_sdk_models import native
from tests.support.server import RunningServer, running_server

dashscope = pytest.importorskip("dashscope")
pytestmark = pytest.mark.e2e

KEY = "sk-upload-e2e"
AUTH = {"Authorization": f"Bearer {KEY}"}
RESOLVE = {"X-DashScope-OssResourceResolve": "enable"}
QUESTION = "What is in the picture?"


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # API keys on: the sink must work without one (the SDK sends none), getPolicy must not.
    with serve(tmp_path_factory.mktemp("uploads-vl"), "qwen25vl", f'[server]\napi_keys = ["{KEY}"]\n') as srv:
        yield srv


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "a dog.png"
    path.write_bytes(base64.b64decode(png(64, 48).split(",", 1)[1]))
    return path


def ask(image: str) -> Any:
    messages = [{"role": "user", "content": [{"image": image}, {"text": QUESTION}]}]
    return dashscope.MultiModalConversation.call(model="qwen-vl-plus", messages=messages, max_tokens=2, api_key=KEY)


@pytest.mark.parametrize("form", ["file_uri", "bare_path"])
def test_sdk_uploads_a_local_file(vision: RunningServer, picture: Path, form: str) -> None:
    image = picture.as_uri() if form == "file_uri" else str(picture)
    with native(vision):
        rsp = ask(image)
    assert rsp.status_code == HTTPStatus.OK, (rsp.code, rsp.message)
    assert isinstance(rsp.output.choices[0].message.content, list)
    assert rsp.usage.image_tokens > 0 and rsp.usage.input_tokens_details["image_tokens"] > 0


def uploaded(server: RunningServer, data: bytes, name: str = "dog.png", model: str = "qwen-vl-plus") -> str:
    """getPolicy and the upload done by hand, as the SDK does them: the oss:// URL of ``data``."""
    params = {"action": "getPolicy", "model": model}
    r = httpx.get(f"{server.root}/api/v1/uploads", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    policy = r.json()["data"]
    assert policy["upload_host"] == f"{server.root}/oss-upload"
    key = f"{policy['upload_dir']}/{name}"
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": key,
        "x-oss-object-acl": policy["x_oss_object_acl"],
        "x-oss-forbid-overwrite": policy["x_oss_forbid_overwrite"],
        "success_action_status": "200",
    }
    r = httpx.post(policy["upload_host"], data=form, files={"file": (name, data, "image/png")})
    assert r.status_code == 200, r.text
    return f"oss://{key}"


def compat(server: RunningServer, url: str, headers: dict[str, str]) -> httpx.Response:
    body = {
        "model": "qwen-vl-plus",
        "max_tokens": 2,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}],
            }
        ],
    }
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers={**AUTH, **headers}, timeout=120)


def test_compatible_mode_reads_an_oss_url_with_the_header(vision: RunningServer, picture: Path) -> None:
    url = uploaded(vision, picture.read_bytes())
    r = compat(vision, url, RESOLVE)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens_details"]["image_tokens"] > 0
    r = compat(vision, url, {})  # DashScope resolves oss:// only when asked to
    assert r.status_code == 400
    assert (
        r.json()["error"]["message"]
        == "The provided URL does not appear to be valid. Ensure it is correctly formatted."
    )


def test_an_unknown_oss_key_cannot_be_downloaded(vision: RunningServer, picture: Path) -> None:
    url = uploaded(vision, picture.read_bytes())
    unknown = re.sub(r"/dog\.png$", "/cat.png", url)
    r = compat(vision, unknown, RESOLVE)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Failed to download multimodal content."
    with native(vision):
        rsp = ask(unknown)  # the SDK passes oss:// through and sends the header itself
    assert rsp.status_code == HTTPStatus.BAD_REQUEST and rsp.code == "InvalidParameter"
    assert rsp.message == "Failed to download multimodal content."


def test_the_temporary_upload_directory_goes_at_shutdown(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        found = re.search(r"uploads for local files kept in (\S+)", server.log())
        assert found, server.log()
        directory = Path(found.group(1))
        assert directory.is_dir()
        uploaded(server, b"not even a picture", "a.bin", "qwen-plus")
        assert len(list((directory / "objects").iterdir())) == 1
    assert server.process.returncode is not None and not directory.exists()
