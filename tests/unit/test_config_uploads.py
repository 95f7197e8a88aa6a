"""The [uploads] table: defaults, honoured keys, and refused keys and values naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError, load_settings
from qwenhost.config_features import UploadsConfig
from qwenhost.main import open_uploads
from tests.support.config import load_toml


def test_defaults_are_dashscopes() -> None:
    uploads = load_settings(environ={}).uploads
    assert uploads == UploadsConfig()
    assert uploads.enabled and uploads.directory is None and uploads.expiry_s == 48 * 3600
    assert uploads.max_file_bytes == 100 * 1024 * 1024


def test_keys_are_honoured(tmp_path: Path) -> None:
    text = f'[uploads]\ndirectory = "{tmp_path / "up"}"\nmax_file_bytes = 10\ncapacity_bytes = 20\nexpiry_s = 60\n'
    uploads = load_toml(tmp_path, text).uploads
    assert uploads == UploadsConfig(True, str(tmp_path / "up"), 10, 20, 60.0)
    store = open_uploads(uploads)
    assert store is not None and store.root == tmp_path / "up" and store.capacity_bytes == 20
    assert open_uploads(load_toml(tmp_path, "[uploads]\nenabled = false\n").uploads) is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("max_file_byte = 1\n", "[uploads]: unknown keys: 'max_file_byte'"),
        ("max_file_bytes = 0\n", "[uploads].max_file_bytes: must be at least 1"),
        ("max_file_bytes = 11\ncapacity_bytes = 10\n", "[uploads].capacity_bytes: must be at least max_file_bytes"),
        ("expiry_s = 0\n", "[uploads].expiry_s: must be more than 0"),
        ("enabled = 'yes'\n", "[uploads].enabled: must be true or false"),
        ("directory = ' '\n", "[uploads].directory: must name a directory"),
    ],
)
def test_bad_keys_and_values_are_refused(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_toml(tmp_path, "[uploads]\n" + text)
    assert str(info.value).startswith(f"{tmp_path / 'qwenhost.toml'}: {where}"), str(info.value)


def test_an_unusable_directory_is_a_start_up_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"\[uploads\] directory"):
        open_uploads(UploadsConfig(directory=str(blocker / "sub")))
