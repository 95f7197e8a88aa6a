"""The upload store: signed policies, key validation, per-file and capacity limits, expiry, overwrite."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from qwenhost.ops.uploads import ACCESS_KEY_ID, MAX_NAME_BYTES, POLICY_TTL_S, ObjectStore, UploadError, valid_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def store(tmp_path: Path, clock: Clock | None = None, **limits: float) -> ObjectStore:
    values = {"max_file_bytes": 100, "capacity_bytes": 250, "expiry_s": 3600.0, **limits}
    return ObjectStore(tmp_path / "store", clock=clock or Clock(), **values)  # type: ignore[arg-type]


def put(s: ObjectStore, key: str, data: bytes, forbid: bool = True) -> int:
    return s.put(key, io.BytesIO(data), forbid_overwrite=forbid)


def read(s: ObjectStore, key: str) -> bytes | None:
    handle = s.open_object(key)
    if handle is None:
        return None
    with handle:
        return handle.read()


def test_policy_allows_its_own_directory_only(tmp_path: Path) -> None:
    s = store(tmp_path)
    issued = s.issue()
    assert issued.upload_dir != s.issue().upload_dir  # random per call
    doc = json.loads(base64.b64decode(issued.policy))
    assert ["starts-with", "$key", issued.upload_dir + "/"] in doc["conditions"]
    args = {"policy": issued.policy, "signature": issued.signature, "access_key_id": ACCESS_KEY_ID}
    s.check(**args, key=f"{issued.upload_dir}/cat.png")
    with pytest.raises(UploadError) as err:
        s.check(**args, key=f"{s.issue().upload_dir}/cat.png")  # another policy's directory
    assert err.value.code == "InvalidObjectName" and err.value.status == 400


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"signature": "AAAA"}, "SignatureDoesNotMatch"),
        ({"access_key_id": "someone"}, "InvalidAccessKeyId"),
        ({"policy": "forged"}, "SignatureDoesNotMatch"),
    ],
)
def test_forged_policies_are_refused(tmp_path: Path, change: dict[str, str], code: str) -> None:
    s = store(tmp_path)
    issued = s.issue()
    args = {"policy": issued.policy, "signature": issued.signature, "access_key_id": ACCESS_KEY_ID, **change}
    with pytest.raises(UploadError) as err:
        s.check(**args, key=f"{issued.upload_dir}/a.png")
    assert err.value.code == code and err.value.status == 403


def test_a_policy_of_another_process_is_refused(tmp_path: Path) -> None:
    issued = store(tmp_path / "a").issue()
    with pytest.raises(UploadError, match="signature"):
        store(tmp_path / "b").check(
            policy=issued.policy, signature=issued.signature, access_key_id=ACCESS_KEY_ID, key=f"{issued.upload_dir}/a"
        )


def test_an_expired_policy_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    s = store(tmp_path, clock)
    issued = s.issue()
    clock.now += POLICY_TTL_S
    with pytest.raises(UploadError, match="Policy expired") as err:
        s.check(
            policy=issued.policy, signature=issued.signature, access_key_id=ACCESS_KEY_ID, key=f"{issued.upload_dir}/a"
        )
    assert err.value.code == "AccessDenied"


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../../etc/passwd", "a/b", "a\\b", "a\x00b", "new\nline", "x" * (MAX_NAME_BYTES + 1)],
)
def test_keys_that_are_not_one_file_name_are_refused(tmp_path: Path, name: str) -> None:
    s = store(tmp_path)
    issued = s.issue()
    key = f"{issued.upload_dir}/{name}"
    assert not valid_key(key)
    with pytest.raises(UploadError):
        s.check(policy=issued.policy, signature=issued.signature, access_key_id=ACCESS_KEY_ID, key=key)
    with pytest.raises(UploadError):
        put(s, key, b"x")
    assert s.open_object(key) is None


def test_keys_outside_an_issued_directory_shape_are_not_read(tmp_path: Path) -> None:
    s = store(tmp_path)
    assert s.open_object("../../../etc/passwd") is None
    assert s.open_object("/etc/passwd") is None
    assert not valid_key("dashscope-instant/other/2026-12-02/" + "0" * 32 + "/a.png")
    assert valid_key("dashscope-instant/qwenhost/2026-12-02/" + "0" * 32 + "/my photo é.png")


def test_objects_are_named_on_disk_by_digest(tmp_path: Path) -> None:
    s = store(tmp_path)
    key = s.issue().upload_dir + "/cat.png"
    assert put(s, key, b"meow") == 4 and read(s, key) == b"meow"
    files = [p.name for p in (s.root / "objects").iterdir()]
    assert len(files) == 1 and len(files[0]) == 64 and "cat" not in files[0]
    assert list((s.root / "partial").iterdir()) == []


def test_per_file_limit(tmp_path: Path) -> None:
    s = store(tmp_path)
    key = s.issue().upload_dir + "/big.bin"
    with pytest.raises(UploadError) as err:
        put(s, key, b"x" * 101)
    assert err.value.code == "EntityTooLarge" and s.used_bytes == 0 and s.open_object(key) is None
    assert put(s, key, b"x" * 100) == 100


def test_capacity_counts_live_objects_and_frees_them_at_expiry(tmp_path: Path) -> None:
    clock = Clock()
    s = store(tmp_path, clock)
    d = s.issue().upload_dir
    put(s, f"{d}/a", b"a" * 100)
    put(s, f"{d}/b", b"b" * 100)
    with pytest.raises(UploadError) as err:
        put(s, f"{d}/c", b"c" * 100)
    assert err.value.status == 507 and "capacity_bytes" in err.value.message
    assert s.used_bytes == 200 and s.open_object(f"{d}/c") is None
    clock.now += 3600  # a and b expire: the next upload purges them first
    assert put(s, f"{d}/c", b"c" * 100) == 100
    assert s.used_bytes == 100 and read(s, f"{d}/a") is None and read(s, f"{d}/c") == b"c" * 100
    assert len(list((s.root / "objects").iterdir())) == 1


def test_expired_objects_cannot_be_read_and_leave_the_disk(tmp_path: Path) -> None:
    clock = Clock()
    s = store(tmp_path, clock)
    key = s.issue().upload_dir + "/a.png"
    put(s, key, b"png")
    clock.now += 3599
    assert read(s, key) == b"png"
    clock.now += 1
    assert read(s, key) is None
    assert list((s.root / "objects").iterdir()) == [] and s.used_bytes == 0


def test_forbid_overwrite_is_honoured(tmp_path: Path) -> None:
    s = store(tmp_path)
    key = s.issue().upload_dir + "/a.png"
    put(s, key, b"first")
    with pytest.raises(UploadError) as err:
        put(s, key, b"second", forbid=True)
    assert err.value.code == "FileAlreadyExists" and err.value.status == 409
    assert read(s, key) == b"first"
    put(s, key, b"2nd", forbid=False)
    assert read(s, key) == b"2nd" and s.used_bytes == 3  # the replaced object no longer counts


def test_a_configured_directory_keeps_live_objects_and_purges_expired_ones_at_start(tmp_path: Path) -> None:
    limits = {"max_file_bytes": 100, "capacity_bytes": 250, "expiry_s": 3600.0}
    s = ObjectStore(tmp_path, **limits)  # type: ignore[arg-type]  # real time: expiry from the file's mtime
    key = s.issue().upload_dir + "/a.png"
    put(s, key, b"kept")
    (s.root / "partial" / ("ab" * 16)).write_bytes(b"cut off by a crash")
    (s.root / "partial" / "notes.txt").write_bytes(b"not the store's: left alone")
    restarted = ObjectStore(tmp_path, **limits)  # type: ignore[arg-type]
    assert read(restarted, key) == b"kept" and restarted.used_bytes == 4
    assert [p.name for p in (tmp_path / "partial").iterdir()] == ["notes.txt"]
    later = Clock()
    later.now = 2 * 1_800_000_000.0  # far beyond the file's mtime + expiry
    purged = ObjectStore(tmp_path, clock=later, **limits)  # type: ignore[arg-type]
    assert purged.used_bytes == 0 and list((tmp_path / "objects").iterdir()) == []


def test_a_temporary_directory_is_removed_at_close(tmp_path: Path) -> None:
    s = ObjectStore.open(None, max_file_bytes=10, capacity_bytes=10, expiry_s=60.0)
    assert s.root.is_dir()
    s.close()
    assert not s.root.exists()
    kept = ObjectStore.open(str(tmp_path / "kept"), max_file_bytes=10, capacity_bytes=10, expiry_s=60.0)
    kept.close()
    assert kept.root.is_dir()
