"""The shared sandbox fixture."""

from __future__ import annotations

import pytest

from qwenhost.tools.sandbox import Sandbox
from tests.tools.sandbox.helpers import make_sandbox


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    """One sandbox for sequential runs (each test drives it from its own event loop, never concurrently)."""
    return make_sandbox()
