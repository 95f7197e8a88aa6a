"""The local object store behind the SDK's upload-policy flow: signed upload policies, and objects on disk
with a per-file limit, a capacity limit and an expiry (what DashScope's temporary OSS space is to its SDK).

An upload is accepted only under a policy this process issued and that has not expired: the policy is
signed with an HMAC under a secret drawn at start, so the sink is not an open file drop. Objects are
named on disk by the SHA-256 of their key, so no key can reach outside the directory; keys are still
validated (bounded, one file name under an issued upload directory) so that a bad one is refused by name.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qwenhost.core.errors import ServeError

log = logging.getLogger("qwenhost.uploads")

POLICY_TTL_S = 300  # DashScope's expire_in_seconds for an upload policy
ACCESS_KEY_ID = "qwenhost-local"  # the oss_access_key_id handed out and required back
MAX_KEY_BYTES = 1023  # OSS's limit on an object key
MAX_NAME_BYTES = 255  # one file name on common file systems
MAX_OBJECTS = 100_000  # each object costs a file and an index entry, however small
ACLS = ("private", "public-read", "public-read-write", "default")  # OSS's x-oss-object-acl values
_DIR = re.compile(r"dashscope-instant/qwenhost/\d{4}-\d{2}-\d{2}/[0-9a-f]{32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class UploadError(ServeError):
    """A refused upload; the edge answers it in OSS's XML error shape (``code`` is OSS's)."""

    code = "InvalidArgument"


def _refuse(status: int, code: str, message: str) -> UploadError:
    return UploadError(message, status=status, code=code)


@dataclass(frozen=True, slots=True)
class IssuedPolicy:
    policy: str
    signature: str
    upload_dir: str
    expire_in_seconds: int
    access_key_id: str = ACCESS_KEY_ID


def valid_key(key: str) -> bool:
    """``<upload dir>/<file name>`` with an upload directory of the form this store issues."""
    if not isinstance(key, str) or _CONTROL.search(key):
        return False
    try:
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            return False
    except UnicodeEncodeError:
        return False
    upload_dir, _, name = key.rpartition("/")
    if not _DIR.fullmatch(upload_dir) or name in ("", ".", ".."):
        return False
    return len(name.encode("utf-8")) <= MAX_NAME_BYTES


class ObjectStore:
    """Objects under ``root/objects``, writes in progress under ``root/partial``; thread-safe."""

    def __init__(
        self,
        root: Path,
        *,
        max_file_bytes: int,
        capacity_bytes: int,
        expiry_s: float,
        owns_root: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.capacity_bytes = capacity_bytes
        self.expiry_s = expiry_s
        self._owns_root = owns_root
        self._clock = clock
        self._secret = secrets.token_bytes(32)  # per process: policies do not outlive it
        self._lock = threading.Lock()
        self._index: OrderedDict[str, tuple[int, float]] = OrderedDict()  # digest -> (size, expires), by expiry
        self._used = 0  # bytes of live objects plus those reserved by writes in progress
        self._objects = root / "objects"
        self._partial = root / "partial"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._partial.mkdir(exist_ok=True)
        self._load()

    @classmethod
    def open(cls, directory: str | None, *, max_file_bytes: int, capacity_bytes: int, expiry_s: float) -> ObjectStore:
        """The store in ``directory`` (created if needed), or in a fresh temporary directory that close()
        removes."""
        limits = {"max_file_bytes": max_file_bytes, "capacity_bytes": capacity_bytes, "expiry_s": expiry_s}
        if directory is None:
            return cls(Path(tempfile.mkdtemp(prefix="qwenhost-uploads-")), owns_root=True, **limits)  # type: ignore[arg-type]
        return cls(Path(directory).expanduser(), **limits)  # type: ignore[arg-type]

    def close(self) -> None:
        """At shutdown: a temporary directory goes with its objects (a configured one keeps them)."""
        if self._owns_root:
            try:
                shutil.rmtree(self.root)
            except OSError as exc:
                log.warning("cannot remove the upload directory %s: %s", self.root, exc)

    # -- policies ---------------------------------------------------------------------------------
    def issue(self) -> IssuedPolicy:
        """A policy for one new, random upload directory, valid for POLICY_TTL_S."""
        now = self._clock()
        day = dt.datetime.fromtimestamp(now, dt.UTC)
        upload_dir = f"dashscope-instant/qwenhost/{day:%Y-%m-%d}/{secrets.token_hex(16)}"
        expiration = dt.datetime.fromtimestamp(now + POLICY_TTL_S, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        document = {
            "expiration": expiration,
            "conditions": [["content-length-range", 0, self.max_file_bytes], ["starts-with", "$key", upload_dir + "/"]],
        }
        policy = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
        return IssuedPolicy(policy, self._sign(policy), upload_dir, POLICY_TTL_S)

    def check(self, *, policy: str, signature: str, access_key_id: str, key: str) -> None:
        """Refuse an upload that no live policy of this process allows."""
        if access_key_id != ACCESS_KEY_ID:
            raise _refuse(
                403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records."
            )
        if not hmac.compare_digest(self._sign(policy).encode(), signature.encode("utf-8", "replace")):
            raise _refuse(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        document = json.loads(base64.b64decode(policy))  # ours: the signature matched
        expires = dt.datetime.fromisoformat(document["expiration"]).timestamp()
        if self._clock() >= expires:
            raise _refuse(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        prefix = next(c[2] for c in document["conditions"] if c[0] == "starts-with")
        if not key.startswith(prefix) or not valid_key(key):
            raise _refuse(
                400,
                "InvalidObjectName",
                f"The key must be one file name (at most {MAX_NAME_BYTES} bytes) under {prefix}",
            )

    def _sign(self, policy: str) -> str:
        return base64.b64encode(hmac.new(self._secret, policy.encode(), hashlib.sha256).digest()).decode()

    # -- objects ----------------------------------------------------------------------------------
    def put(self, key: str, source: BinaryIO, *, forbid_overwrite: bool) -> int:
        """Store ``source`` (a seekable file) as ``key``; its size. ``key`` was checked by check()."""
        if not valid_key(key):
            raise _refuse(400, "InvalidObjectName", "The object key is not valid.")
        digest = _digest(key)
        size = source.seek(0, io.SEEK_END)
        source.seek(0)
        with self._lock:
            self._purge_locked()
            self._admit_locked(digest, size, forbid_overwrite)
            self._used += size
        partial = self._partial / secrets.token_hex(16)
        try:
            with partial.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            with self._lock:
                if forbid_overwrite and self._live_locked(digest):  # another upload of the key landed first
                    raise _already_exists()
                os.replace(partial, self._objects / digest)
                old = self._index.pop(digest, None)
                self._used -= old[0] if old else 0
                self._index[digest] = (size, self._clock() + self.expiry_s)
        except BaseException:
            with self._lock:
                self._used -= size
            partial.unlink(missing_ok=True)
            raise
        return size

    def _admit_locked(self, digest: str, size: int, forbid_overwrite: bool) -> None:
        if size > self.max_file_bytes:
            raise _refuse(
                400,
                "EntityTooLarge",
                f"Your proposed upload exceeds the maximum allowed size ({self.max_file_bytes} bytes).",
            )
        live = self._live_locked(digest)
        if forbid_overwrite and live:
            raise _already_exists()
        replaced = self._index[digest][0] if live else 0
        if self._used - replaced + size > self.capacity_bytes:
            raise _refuse(
                507,
                "InsufficientStorage",
                f"The upload space is full ({self.capacity_bytes} bytes, [uploads] capacity_bytes); "
                "objects are removed when they expire.",
            )
        if not live and len(self._index) >= MAX_OBJECTS:
            raise _refuse(507, "InsufficientStorage", f"The upload space holds {MAX_OBJECTS} objects, its most.")

    def open_object(self, key: str) -> BinaryIO | None:
        """The live object ``key`` opened for reading, or None (unknown, expired, or not a valid key)."""
        if not valid_key(key):
            return None
        digest = _digest(key)
        with self._lock:
            self._purge_locked()
            if not self._live_locked(digest):
                return None
            try:
                return (self._objects / digest).open("rb")
            except FileNotFoundError:  # removed from outside the server
                self._drop_locked(digest)
                return None

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    def purge(self) -> None:
        with self._lock:
            self._purge_locked()

    def _live_locked(self, digest: str) -> bool:
        entry = self._index.get(digest)
        return entry is not None and entry[1] > self._clock()

    def _purge_locked(self) -> None:
        """Expired objects go, oldest first (the index is in expiry order: every object lives expiry_s)."""
        now = self._clock()
        while self._index:
            digest, (_, expires) = next(iter(self._index.items()))
            if expires > now:
                break
            self._drop_locked(digest)

    def _drop_locked(self, digest: str) -> None:
        size, _ = self._index.pop(digest)
        self._used -= size
        try:
            (self._objects / digest).unlink(missing_ok=True)
        except OSError as exc:  # still open on a system that forbids removing open files: retried at start
            log.warning("cannot remove expired upload %s: %s", digest, exc)

    def _load(self) -> None:
        """What an earlier run left in a configured directory: writes it did not finish go, expired objects
        go, the rest count. Only names this store writes are touched (the directory may hold other files)."""
        for path in self._partial.iterdir():
            if re.fullmatch(r"[0-9a-f]{32}", path.name) and path.is_file():
                path.unlink()
        found = []
        for path in self._objects.iterdir():
            if not re.fullmatch(r"[0-9a-f]{64}", path.name) or not path.is_file():
                log.warning("ignoring %s: not an object of this store", path)
                continue
            stat = path.stat()
            found.append((stat.st_mtime + self.expiry_s, path.name, stat.st_size))
        for expires, digest, size in sorted(found):
            self._index[digest] = (size, expires)
            self._used += size
        self._purge_locked()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _already_exists() -> UploadError:
    return _refuse(409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
