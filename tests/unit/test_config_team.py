"""[store] and [limits]: strict tables (unknown keys and bad values refused, naming the key), defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError, load_settings
from qwenhost.config_features import LimitsConfig, ModelLimit, StoreConfig, default_store_path
from tests.support.config import load_toml


def _load(tmp_path: Path, text: str) -> tuple[StoreConfig, LimitsConfig]:
    settings = load_toml(tmp_path, text)
    return settings.store, settings.limits


def test_defaults_are_a_sqlite_file_in_the_data_dir() -> None:
    settings = load_settings(environ={})
    assert settings.store.enabled and settings.store.url is None
    assert settings.limits == LimitsConfig()
    assert default_store_path({"XDG_DATA_HOME": "/data"}) == "/data/qwenhost/qwenhost.db"


def test_store_and_limits_tables(tmp_path: Path) -> None:
    store, limits = _load(
        tmp_path,
        '[store]\nurl = "postgresql://q@db/q"\ntimeout_s = 2\nmetrics_keys = ["alice"]\n'
        '[limits]\nrpm = 60\nburst_factor = 3\n[limits.models."qwen-plus"]\ntpm = 1000\n',
    )
    assert store.resolved_url() == "postgresql://q@db/q" and store.timeout_s == 2.0
    assert store.metrics_keys == ("alice",)
    assert limits == LimitsConfig(rpm=60, tpm=None, burst_factor=3.0, models=(("qwen-plus", ModelLimit(None, 1000)),))
    store, _ = _load(tmp_path, '[store]\npath = "/tmp/x/q.db"\n')
    assert store.resolved_url() == "sqlite:////tmp/x/q.db"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[store]\ndsn = 'x'\n", "[store]: unknown keys: 'dsn'"),
        ("[store]\nurl = 'mysql://x'\n", "[store].url: must start with postgresql://"),
        ("[store]\ntimeout_s = 0\n", "[store].timeout_s: must be more than 0"),
        ("[limits]\nrpm = 0\n", "[limits].rpm: must be at least 1"),
        ("[limits]\nburst = 2\n", "[limits]: unknown keys: 'burst'"),
        ("[limits]\nburst_factor = 0\n", "[limits].burst_factor: must be more than 0"),
        ("[limits.models.'qwen-plus']\nrps = 1\n", "[limits.models.'qwen-plus']: unknown keys: 'rps'"),
        ("[limits.models.'qwen-plus']\ntpm = -5\n", "[limits.models.'qwen-plus'].tpm: must be at least 1"),
    ],
)
def test_refused(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'qwenhost.toml'}: {where}"), str(info.value)
