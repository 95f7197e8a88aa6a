"""[speech] in the config file: defaults, and values that cannot work refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError
from tests.support.config import load_toml


def test_defaults_and_a_set_language(tmp_path: Path) -> None:
    settings = load_toml(tmp_path, '[speech]\nlanguage = "cmn"\nmax_pending = 3\n')
    assert settings.speech.language == "cmn" and settings.speech.max_pending == 3
    assert settings.speech.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[speech]\nlanguage = "klingon"\n', "language: must be one of auto, cmn"),
        ("[speech]\nmax_pending = 0\n", "max_pending: must be at least 1"),
        ("[speech]\nvoice = 1\n", "unknown keys: 'voice'"),
    ],
)
def test_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_toml(tmp_path, text)
