"""Settings are honoured or refused: unknown keys and bad values are start-up errors naming key and file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from qwenhost.api.body import DEFAULT_MAX_BODY_BYTES
from qwenhost.config import KV_CACHE_TYPES, ConfigError, load_settings
from qwenhost.main import configure_logging, engine_config
from tests.support.config import load_toml

MODEL = '[[models]]\nname = "m"\npath = "x.gguf"\n'


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[serverr]\nport = 1\n", "top level: unknown keys: 'serverr'"),
        ("log_level = 'debug'\n", "top level: unknown keys: 'log_level'"),
        ("[server]\nmax_body_byte = 1\n", "[server]: unknown keys: 'max_body_byte'"),
        ("[media]\nmax_image_byte = 1\n", "[media]: unknown keys: 'max_image_byte'"),
        (MODEL + "kv_cache_size = 1\n", "models[0]: unknown keys: 'kv_cache_size'"),
        (MODEL + "[models.sampling]\nmin_p = 0.1\n", "models[0].sampling: unknown keys: 'min_p'"),
        (MODEL + "[models.sampling_thinking]\ntop_k_disabled = true\n", "models[0].sampling_thinking: unknown"),
    ],
)
def test_unknown_keys_name_the_key_and_the_file(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_toml(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'qwenhost.toml'}: {where}"), str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = '8000'\n", "[server].port: must be an integer, not '8000'"),
        ("[server]\naccess_log = 'no'\n", "[server].access_log: must be true or false, not 'no'"),
        ("[server]\ntest_faults = 1\n", "[server].test_faults: must be true or false, not 1"),
        ("[server]\nshutdown_grace_s = true\n", "[server].shutdown_grace_s: must be a number, not True"),
        ("[server]\napi_keys = 'sk-1'\n", "[server].api_keys: must be a list, not 'sk-1'"),
        ("[server]\nlog_level = 'loud'\n", "[server].log_level: must be one of debug, info, warning, error"),
        ("[server]\nmax_body_bytes = 0\n", "[server].max_body_bytes: must be at least 1"),
        ("[media]\nallowed_hosts = ['a', 2]\n", "[media].allowed_hosts[1]: must be a string, not 2"),
        (MODEL + "parallel = 2.5\n", "models[0].parallel: must be an integer, not 2.5"),
        (MODEL + "aliases = 'qwen-plus'\n", "models[0].aliases: must be a list"),
        (MODEL + 'kv_cache_type = "q3_k"\n', "models[0]: kv_cache_type must be one of f32, f16, bf16"),
        (MODEL + "watchdog_s = 0\n", "models[0]: watchdog_s must be more than 0"),
        (MODEL + "[models.sampling]\ntop_k = 2.5\n", "models[0].sampling.top_k: must be an integer, not 2.5"),
        ("models = 1\n", "models: must be an array of tables"),
    ],
)
def test_bad_values_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_toml(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'qwenhost.toml'}: {message}"), str(info.value)


def test_command_line_values_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=re.escape("the command line: models[0]: parallel must be at least 1")):
        load_settings(None, parallel=0, environ={})


def test_server_keys_and_defaults(tmp_path: Path) -> None:
    server = load_settings(None, environ={}).server
    assert server.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 64 * 1024 * 1024
    assert server.shutdown_grace_s == 30.0 and server.test_faults is False
    text = "[server]\nmax_body_bytes = 1024\nshutdown_grace_s = 5\ntest_faults = true\nlog_level = 'warning'\n"
    server = load_toml(tmp_path, text).server
    assert (server.max_body_bytes, server.shutdown_grace_s, server.test_faults) == (1024, 5.0, True)
    assert isinstance(server.shutdown_grace_s, float)  # an integer is a number
    assert server.log_level == "warning"
    cfg = tmp_path / "qwenhost.toml"
    assert load_settings(str(cfg), log_level="debug", environ={}).server.log_level == "debug"  # CLI wins


def test_every_kv_cache_type_llama_cpp_accepts_is_taken(tmp_path: Path) -> None:
    for name in KV_CACHE_TYPES:
        model = load_toml(tmp_path, MODEL + f'kv_cache_type = "{name}"\n').models[0]
        assert engine_config(model).runner.kv_cache_type == name


def test_watchdog_reaches_the_engine(tmp_path: Path) -> None:
    model = load_toml(tmp_path, MODEL + "watchdog_s = 12.5\n").models[0]
    assert model.watchdog_s == 12.5 and engine_config(model).watchdog_s == 12.5
    assert engine_config(load_settings(None, environ={}).models[0]).watchdog_s == 60.0


def test_log_level_and_access_log_are_honoured(tmp_path: Path) -> None:
    root, access = logging.getLogger(), logging.getLogger("qwenhost.access")
    saved = root.level, access.level
    try:
        configure_logging(load_toml(tmp_path, "[server]\nlog_level = 'warning'\naccess_log = true\n").server)
        assert root.level == logging.WARNING
        assert access.isEnabledFor(logging.INFO)  # access lines whatever log_level says
        configure_logging(load_toml(tmp_path, "[server]\naccess_log = false\n").server)
        assert root.level == logging.INFO and not access.isEnabledFor(logging.CRITICAL)
    finally:
        root.setLevel(saved[0])
        access.setLevel(saved[1])
