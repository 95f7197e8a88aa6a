"""`qwenhost keys`: the key file is 0600 from the moment it exists, rewritten atomically, names unique."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhost.cli import main
from qwenhost.config import hash_key, read_keys_file
from qwenhost.ops import keyfile
from qwenhost.ops.keyfile import KeyFileError, add_key, key_names, remove_key


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: whatever is private here is private by mode, not by luck."""
    saved = os.umask(0)
    try:
        yield
    finally:
        os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_add_creates_a_private_file_whose_hash_verifies(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "keys.txt"
    name, key = add_key(path, "alice")
    assert name == "alice"
    assert _mode(path) == 0o600
    assert read_keys_file(str(path)) == (("alice", hash_key(key)),)
    assert key not in path.read_text("utf-8")


def test_the_new_file_is_never_readable_by_others(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("old sha256:" + "0" * 64 + "\n", "utf-8")
    path.chmod(0o644)  # an old, world-readable file is replaced by a private one
    seen: list[int] = []
    real_replace = os.replace

    def replace(src: str, dst: Path) -> None:
        seen.append(_mode(Path(src)))  # the file about to become the key file, already written
        real_replace(src, dst)

    monkeypatch.setattr(keyfile.os, "replace", replace)
    add_key(path, "bob")
    assert seen == [0o600] and _mode(path) == 0o600
    assert key_names(path) == ["old", "bob"]
    assert [p.name for p in tmp_path.iterdir()] == ["keys.txt"]  # no temporary file left behind


def test_names_are_unique_and_remove_rewrites_privately(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "keys.txt"
    add_key(path, "alice")
    add_key(path, "bob")
    with pytest.raises(KeyFileError, match="a key named alice already exists"):
        add_key(path, "alice")
    with pytest.raises(KeyFileError, match="cannot be empty or contain spaces"):
        add_key(path, "a b")
    remove_key(path, "alice")
    assert key_names(path) == ["bob"] and _mode(path) == 0o600
    with pytest.raises(KeyFileError, match="no key named carol"):
        remove_key(path, "carol")


def test_cli_keys(tmp_path: Path, open_umask: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.txt"
    assert main(["keys", "add", "--file", str(path), "--name", "alice"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("alice: sk-") and _mode(path) == 0o600
    assert main(["keys", "add", "--file", str(path), "--name", "alice"]) == 1
    assert main(["keys", "list", "--file", str(path)]) == 0
    assert capsys.readouterr().out == "alice\n"
    assert main(["keys", "remove", "--file", str(path), "--name", "alice"]) == 0
    assert key_names(path) == []
