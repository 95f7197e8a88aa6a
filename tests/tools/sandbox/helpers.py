"""Helpers for the sandbox tests: real bubblewrap, skipped only where bwrap is not installed (CI installs it)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from qwenhost.tools.sandbox import Sandbox, SandboxConfig, SandboxResult, prepare_sandbox

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
)

# The server's own interpreter may sit where the pool uids cannot read (pyenv under /root, mode 0700);
# Debian's, with python3-numpy and python3-sympy, is what .ci/run installs for the sandbox.
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else ""
LIMITS: dict[str, Any] = {"cpu_seconds": 2, "wall_timeout_s": 20.0, "python": PYTHON}


def make_sandbox(**overrides: Any) -> Sandbox:
    return prepare_sandbox(SandboxConfig(**{**LIMITS, **overrides}))


def run(sandbox: Sandbox, code: str, **kwargs: Any) -> SandboxResult:
    return asyncio.run(sandbox.run(code, **kwargs))
