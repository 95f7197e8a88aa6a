"""The KV layout setting: split by default, unified when the operator bounds the KV memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError, load_settings
from qwenhost.main import engine_config
from tests.support.config import one_model


def test_split_is_the_default_and_kv_cache_tokens_selects_unified(tmp_path: Path) -> None:
    assert one_model(tmp_path, "").is_kv_split
    assert engine_config(one_model(tmp_path, "")).runner.kv_split
    bounded = one_model(tmp_path, "kv_cache_tokens = 16384\ncontext_length = 4096\n")
    assert not bounded.is_kv_split and not engine_config(bounded).runner.kv_split
    assert not one_model(tmp_path, 'kv_layout = "unified"\n').is_kv_split
    assert load_settings(None, kv_layout="unified", environ={}).models[0].kv_layout == "unified"


def test_bad_layouts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='kv_layout must be "unified" or "split"'):
        one_model(tmp_path, 'kv_layout = "paged"\n')
    with pytest.raises(ConfigError, match="kv_cache_tokens applies to"):
        one_model(tmp_path, 'kv_layout = "split"\nkv_cache_tokens = 16384\n')


def test_flash_attention_is_off_on_the_cpu_unless_set(tmp_path: Path) -> None:
    assert engine_config(one_model(tmp_path, "")).runner.flash_attn is False  # measured slower on the CPU
    assert engine_config(one_model(tmp_path, "gpu_layers = 99\n")).runner.flash_attn is None  # llama.cpp's auto
    assert engine_config(one_model(tmp_path, "flash_attn = true\n")).runner.flash_attn is True
    assert engine_config(one_model(tmp_path, "gpu_layers = 99\nflash_attn = false\n")).runner.flash_attn is False
    with pytest.raises(ConfigError, match="flash_attn"):
        one_model(tmp_path, 'flash_attn = "auto"\n')


def test_a_quantized_kv_cache_keeps_flash_attention(tmp_path: Path) -> None:
    assert engine_config(one_model(tmp_path, 'kv_cache_type = "q8_0"\n')).runner.flash_attn is None
    with pytest.raises(ConfigError, match="needs flash_attn"):
        one_model(tmp_path, 'kv_cache_type = "q8_0"\nflash_attn = false\n')
