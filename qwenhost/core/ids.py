"""Identifiers handed to clients: chatcmpl-<uuid>, call_<hex>, request ids — made in one place."""

from __future__ import annotations

import secrets
import uuid


def new_request_id() -> str:
    """A bare UUID; the response id is ``chatcmpl-`` + this (spec §2.1, OBS-2)."""
    return str(uuid.uuid4())


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def tool_call_id() -> str:
    """``call_`` + 24 hex characters, as observed on DashScope (spec §2.4, OBS-3)."""
    return "call_" + secrets.token_hex(12)
