"""The upload-policy routes (getPolicy, the /oss-upload sink) and the native 404/405 envelopes, in process."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from qwenhost.api.app import create_app
from qwenhost.config import DASHSCOPE_ALIASES, ModelConfig, hash_key
from qwenhost.engine.fake import FakeBackend
from qwenhost.main import served_model
from qwenhost.ops.auth import KeyStore
from qwenhost.ops.uploads import ObjectStore
from qwenhost.service.chat import ChatService
from qwenhost.service.models import ModelRegistry

POLICY = "/api/v1/uploads"
KEY = "sk-upload-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path, max_file_bytes=1000, capacity_bytes=5000, expiry_s=60.0)
    yield s
    s.close()


def client(store: ObjectStore | None, keys: tuple[str, ...] = (KEY,)) -> TestClient:
    config = ModelConfig(name="fake-model", path="unused", aliases=DASHSCOPE_ALIASES)
    service = ChatService(ModelRegistry([served_model(config, FakeBackend())]))
    app = create_app(service, KeyStore([(f"k{i}", hash_key(k)) for i, k in enumerate(keys)]), uploads=store)
    return TestClient(app)


def policy(c: TestClient, model: str = "qwen-plus") -> dict[str, Any]:
    r = c.get(POLICY, params={"action": "getPolicy", "model": model}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["request_id"], str) and body["request_id"]
    data: dict[str, Any] = body["data"]
    return data


def upload(c: TestClient, data: dict[str, Any], name: str = "cat.png", content: bytes = b"png!", **change: str) -> Any:
    """The form the SDK's OssUtils.upload posts (no Authorization header)."""
    form = {
        "OSSAccessKeyId": data["oss_access_key_id"],
        "Signature": data["signature"],
        "policy": data["policy"],
        "key": f"{data['upload_dir']}/{name}",
        "x-oss-object-acl": data["x_oss_object_acl"],
        "x-oss-forbid-overwrite": data["x_oss_forbid_overwrite"],
        "success_action_status": "200",
        "x-oss-content-type": "image/png",
        **change,
    }
    return c.post(data["upload_host"], data=form, files={"file": (name, content)})


def oss_code(r: Any) -> str:
    assert r.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(r.text)
    assert root.tag == "Error" and root.findtext("RequestId")
    return str(root.findtext("Code"))


def test_get_policy_answers_what_the_sdk_reads(store: ObjectStore) -> None:
    data = policy(client(store))
    assert data["upload_host"] == "http://testserver/oss-upload"
    assert data["upload_dir"].startswith("dashscope-instant/")
    assert data["max_file_size_mb"] == 0 and data["expire_in_seconds"] == 300  # 1000 bytes: under 1 MiB
    assert {"policy", "signature", "oss_access_key_id", "x_oss_object_acl", "x_oss_forbid_overwrite"} <= set(data)
    assert data["x_oss_forbid_overwrite"] == "true"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"action": "getPolicy", "model": "no-such-model"}, 404, "ModelNotFound"),
        ({"action": "getPolicy"}, 400, "BadRequest.EmptyModel"),
        ({"action": "delete", "model": "qwen-plus"}, 400, "InvalidParameter"),
        ({"model": "qwen-plus"}, 400, "InvalidParameter"),
    ],
)
def test_get_policy_errors_are_native(store: ObjectStore, params: dict[str, str], status: int, code: str) -> None:
    r = client(store).get(POLICY, params=params, headers=AUTH)
    assert r.status_code == status
    assert set(r.json()) == {"code", "message", "request_id"} and r.json()["code"] == code


def test_get_policy_needs_a_key_and_the_sink_does_not(store: ObjectStore) -> None:
    c = client(store)
    r = c.get(POLICY, params={"action": "getPolicy", "model": "qwen-plus"})
    assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
    data = policy(c)
    r = upload(c, data)
    assert r.status_code == 200 and r.content == b""
    handle = store.open_object(f"{data['upload_dir']}/cat.png")
    assert handle is not None
    with handle:
        assert handle.read() == b"png!"


def test_success_action_status_defaults_to_204_as_on_oss(store: ObjectStore) -> None:
    c = client(store)
    data = policy(c)
    form = {
        "OSSAccessKeyId": data["oss_access_key_id"],
        "Signature": data["signature"],
        "policy": data["policy"],
        "key": f"{data['upload_dir']}/a.png",
    }
    assert c.post("/oss-upload", data=form, files={"file": ("a.png", b"x")}).status_code == 204
    r = upload(c, data, name="b.png", success_action_status="201")
    assert r.status_code == 400 and oss_code(r) == "InvalidArgument"


def test_the_sink_is_no_open_file_drop(store: ObjectStore) -> None:
    c = client(store)
    data = policy(c)
    r = upload(c, data, Signature="AAAA")
    assert r.status_code == 403 and oss_code(r) == "SignatureDoesNotMatch"
    r = upload(c, data, key=policy(c)["upload_dir"] + "/cat.png")  # a directory this policy does not name
    assert r.status_code == 400 and oss_code(r) == "InvalidObjectName"
    r = upload(c, data, name="../../escape.png")
    assert r.status_code == 400 and oss_code(r) == "InvalidObjectName"
    assert store.used_bytes == 0


def test_sink_limits_and_overwrite(store: ObjectStore) -> None:
    c = client(store)
    data = policy(c)
    r = upload(c, data, content=b"x" * 1001)
    assert r.status_code == 400 and oss_code(r) == "EntityTooLarge"
    r = upload(c, data, content=b"x" * 70_000)  # past the body limit: refused from Content-Length
    assert r.status_code == 413 and oss_code(r) == "EntityTooLarge"
    assert upload(c, data).status_code == 200
    r = upload(c, data, content=b"other")
    assert r.status_code == 409 and oss_code(r) == "FileAlreadyExists"
    assert upload(c, data, content=b"other", **{"x-oss-forbid-overwrite": "false"}).status_code == 200
    assert store.used_bytes == 5


def test_sink_refuses_malformed_forms(store: ObjectStore) -> None:
    c = client(store)
    r = c.post("/oss-upload", json={"key": "x"})
    assert r.status_code == 400 and oss_code(r) == "MalformedPOSTRequest"
    r = c.post("/oss-upload", data={"key": "x"}, files={"file": ("a", b"a")})  # no policy fields
    assert r.status_code == 400 and oss_code(r) == "MalformedPOSTRequest"
    r = c.post("/oss-upload", content=b"--nope", headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and oss_code(r) == "MalformedPOSTRequest"


def test_uploads_disabled_means_no_routes() -> None:
    c = client(None)
    r = c.get(POLICY, params={"action": "getPolicy", "model": "qwen-plus"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["code"] == "NotFound"
    assert c.post("/oss-upload", data={"a": "b"}).status_code == 404


def test_unknown_paths_and_methods_under_api_v1_answer_natively(store: ObjectStore) -> None:
    c = client(store, keys=())
    r = c.post("/api/v1/services/aigc/nothing/here", json={})
    assert r.status_code == 404 and set(r.json()) == {"code", "message", "request_id"}
    assert r.json()["code"] == "NotFound"
    r = c.get("/api/v1/services/aigc/text-generation/generation")
    assert r.status_code == 405 and set(r.json()) == {"code", "message", "request_id"}
    assert r.json()["message"] == "Request method 'GET' is not supported."
    r = c.post(POLICY)
    assert r.status_code == 405 and r.json()["code"] == "InvalidParameter"
    # compatible mode keeps its own envelope
    r = c.get("/compatible-mode/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = c.get("/compatible-mode/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_a_chunked_body_is_cut_off_at_the_limit(store: ObjectStore) -> None:
    c = client(store)
    data = policy(c)
    fields = {"OSSAccessKeyId": data["oss_access_key_id"], "Signature": data["signature"], "policy": data["policy"]}
    fields["key"] = f"{data['upload_dir']}/big.bin"
    head = "".join(f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items())
    head += '--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    sent = []

    def body() -> Iterator[bytes]:  # no Content-Length: only counting the bytes can stop it
        yield head.encode()
        for _ in range(200):
            sent.append(1)
            yield b"x" * 1024
        yield b"\r\n--b--\r\n"

    r = c.post("/oss-upload", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and oss_code(r) == "EntityTooLarge"
    assert store.used_bytes == 0
