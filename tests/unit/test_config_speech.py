"""[speech] in the config file: defaults, and values that cannot work refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError, load_settings


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "q.toml"
    path.write_text(text, "utf-8")
    return load_settings(str(path), environ={})


def test_defaults_and_a_set_language(tmp_path: Path) -> None:
    settings = load(tmp_path, '[speech]\nlanguage = "cmn"\nmax_pending = 3\n')
    assert settings.speech.language == "cmn" and settings.speech.max_pending == 3  # type: ignore[attr-defined]
    assert settings.speech.enabled  # type: ignore[attr-defined]


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
        load(tmp_path, text)
