"""The house rules as tests: ruff lint and format, mypy (strict) on every layer, and the import contracts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "cmd",
    [
        (sys.executable, "-m", "ruff", "check", "qwenhost", "tests", "bench"),
        (sys.executable, "-m", "ruff", "format", "--check", "qwenhost", "tests", "bench"),
        (sys.executable, "-m", "mypy"),
        (str(BIN / "lint-imports"),),
    ],
    ids=["ruff-check", "ruff-format", "mypy", "import-contracts"],
)
def test_tool_passes(cmd: tuple[str, ...]) -> None:
    result = run(*cmd)
    assert result.returncode == 0, result.stdout + result.stderr
