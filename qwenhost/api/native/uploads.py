"""The upload-policy flow of the SDK for local files (spec §2.5): ``GET /api/v1/uploads?action=getPolicy``
hands out a signed policy whose ``upload_host`` is this server's ``/oss-upload`` sink, which takes OSS's
multipart PostObject form and stores the file in ops/uploads.py's ObjectStore.

The sink needs no API key (the SDK sends none): the signed, short-lived policy authorises it. Its errors
are OSS's XML ``<Error>`` documents, as the real upload host answers; getPolicy's are native JSON.
"""

from __future__ import annotations

import asyncio
from xml.sax.saxutils import escape

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive

from qwenhost.api.native.errors import native_error_response
from qwenhost.core import ids
from qwenhost.core.errors import InvalidParameter, ServeError
from qwenhost.ops.uploads import ACLS, ObjectStore, UploadError
from qwenhost.service.models import ModelRegistry

POLICY_PATH = "/uploads"  # under the native prefix
SINK_PATH = "/oss-upload"
FORM_OVERHEAD_BYTES = 64 * 1024  # the form fields and part headers around the file
MAX_CONCURRENT_UPLOADS = 8  # each may spool up to max_file_bytes to a temporary file while it is parsed
_FIELDS = ("OSSAccessKeyId", "Signature", "policy", "key")


class UploadRoutes:
    def __init__(self, store: ObjectStore, registry: ModelRegistry) -> None:
        self.store = store
        self.registry = registry
        self._uploads = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)

    @property
    def body_limit(self) -> int:
        return self.store.max_file_bytes + FORM_OVERHEAD_BYTES

    async def get_policy(self, request: Request) -> Response:
        request_id = ids.new_request_id()
        try:
            action = request.query_params.get("action")
            if action != "getPolicy":
                raise InvalidParameter(f"Unsupported action {action!r}: this server answers action=getPolicy only.")
            model = request.query_params.get("model")
            if not model:
                raise ServeError('Required parameter "model" missing from request.', code="BadRequest.EmptyModel")
            self.registry.resolve(model)  # ModelNotFound (404) for a name that is not served
            issued = self.store.issue()  # no disk work: a policy is signed, not stored
        except ServeError as exc:
            return native_error_response(exc, request_id)
        data = {
            "policy": issued.policy,
            "signature": issued.signature,
            "upload_dir": issued.upload_dir,
            "upload_host": str(request.base_url).rstrip("/") + SINK_PATH,
            "expire_in_seconds": issued.expire_in_seconds,
            "max_file_size_mb": self.store.max_file_bytes // (1024 * 1024),
            "capacity_limit_mb": self.store.capacity_bytes // (1024 * 1024),
            "oss_access_key_id": issued.access_key_id,
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        return JSONResponse({"request_id": request_id, "data": data}, headers={"x-request-id": request_id})

    async def sink(self, request: Request) -> Response:
        request_id = ids.new_request_id()
        if self._uploads.locked():
            return oss_error(UploadError("Please reduce your request rate.", status=503, code="SlowDown"), request_id)
        async with self._uploads:
            try:
                status = await self._store_upload(request)
            except ServeError as exc:
                return oss_error(exc, request_id)
        return Response(status_code=status, headers={"x-oss-request-id": request_id})

    async def _store_upload(self, request: Request) -> int:
        """Parse the form within the body limit, check it against its policy, store the file; the status."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.body_limit:
            raise _too_large(self.store.max_file_bytes)
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise _malformed()
        capped = Request(request.scope, _capped(request.receive, self.body_limit, self.store.max_file_bytes))
        try:
            async with capped.form(max_files=1, max_fields=16, max_part_size=16 * 1024) as form:
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                upload = form.get("file")
                if not isinstance(upload, UploadFile) or any(f not in fields for f in _FIELDS):
                    raise _malformed()
                status = _options(fields)
                forbid = _forbid_overwrite(fields)
                key = fields["key"]
                self.store.check(
                    policy=fields["policy"],
                    signature=fields["Signature"],
                    access_key_id=fields["OSSAccessKeyId"],
                    key=key,
                )
                await run_in_threadpool(self.store.put, key, upload.file, forbid_overwrite=forbid)
        except HTTPException:  # Starlette's answer to a malformed multipart body
            raise _malformed() from None
        return status


def _options(fields: dict[str, str]) -> int:
    """success_action_status (200 or 204, OSS's default) and x-oss-object-acl (no effect here: objects are
    read only through oss:// URLs by callers with an API key)."""
    status = fields.get("success_action_status", "204")
    if status not in ("200", "204"):
        raise UploadError(f"success_action_status must be 200 or 204 on this server, not {status!r}.")
    acl = fields.get("x-oss-object-acl", "private")
    if acl not in ACLS:
        raise UploadError(f"x-oss-object-acl must be one of {', '.join(ACLS)}, not {acl!r}.")
    return int(status)


def _forbid_overwrite(fields: dict[str, str]) -> bool:
    value = fields.get("x-oss-forbid-overwrite", "false").lower()
    if value not in ("true", "false"):
        raise UploadError(f"x-oss-forbid-overwrite must be true or false, not {value!r}.")
    return value == "true"


def _capped(receive: Receive, limit: int, max_file_bytes: int) -> Receive:
    """``receive`` that refuses a body (chunked ones too) once more than ``limit`` bytes have come."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(max_file_bytes)
        return message

    return wrapped


def _too_large(max_file_bytes: int) -> UploadError:
    return UploadError(
        f"Your proposed upload exceeds the maximum allowed size ({max_file_bytes} bytes).",
        status=413,
        code="EntityTooLarge",
    )


def _malformed() -> UploadError:
    return UploadError(
        "The body of your POST request is not well-formed multipart/form-data with the fields "
        f"{', '.join(_FIELDS)} and a file part named file.",
        code="MalformedPOSTRequest",
    )


def oss_error(error: ServeError, request_id: str) -> Response:
    """OSS's error document: ``<Error><Code/><Message/><RequestId/></Error>``."""
    code = error.code if isinstance(error, UploadError) else "InvalidArgument"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(error.message)}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>qwenhost</HostId></Error>"
    )
    return Response(
        body, status_code=error.status, media_type="application/xml", headers={"x-oss-request-id": request_id}
    )
