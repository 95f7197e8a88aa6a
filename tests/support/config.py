"""A config file written to a test's temporary directory and loaded as the server would load it."""

from __future__ import annotations

from pathlib import Path

from qwenhost.config import ModelConfig, Settings, load_settings


def config_path(tmp_path: Path) -> Path:
    """Where load_toml writes the file: errors name it."""
    return tmp_path / "qwenhost.toml"


def load_toml(tmp_path: Path, text: str) -> Settings:
    """``text`` as the server's config file, with no environment variables."""
    path = config_path(tmp_path)
    path.write_text(text, "utf-8")
    return load_settings(str(path), environ={})


def one_model(tmp_path: Path, body: str) -> ModelConfig:
    """The only model of a config whose [[models]] table holds ``body`` besides a name and a path."""
    return load_toml(tmp_path, f'[[models]]\nname = "m"\npath = "x.gguf"\n{body}').models[0]
