"""The API-key file behind ``qwenhost keys``: lines of ``<name> sha256:<hex>``, rewritten atomically and
private (0600) from the moment the file exists — there is never a window where it is world-readable."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from pathlib import Path


class KeyFileError(ValueError):
    pass


def key_names(path: Path) -> list[str]:
    return [line.split()[0] for line in _lines(path) if line.strip() and not line.lstrip().startswith("#")]


def add_key(path: Path, name: str | None = None) -> tuple[str, str]:
    """A new key: its name and the plain key (shown once; only its SHA-256 digest is stored)."""
    name = name or f"key-{secrets.token_hex(3)}"
    if not name or any(c.isspace() for c in name):
        raise KeyFileError("a key name cannot be empty or contain spaces")
    if name in key_names(path):
        raise KeyFileError(f"a key named {name} already exists in {path}")
    key = "sk-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    write_private(path, "".join(f"{line}\n" for line in [*_lines(path), f"{name} sha256:{digest}"]))
    return name, key


def remove_key(path: Path, name: str) -> None:
    lines = _lines(path)
    kept = [line for line in lines if line.split()[:1] != [name]]
    if len(kept) == len(lines):
        raise KeyFileError(f"no key named {name} in {path}")
    write_private(path, "".join(f"{line}\n" for line in kept))


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file created 0600 (mkstemp) in the same directory, then
    os.replace, so readers see the old file or the new one, and nobody else can read either."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)  # mkstemp's mode already; said again because the guarantee is the point
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _lines(path: Path) -> list[str]:
    return path.read_text("utf-8").splitlines() if path.exists() else []
