"""The constrained-output loop guard settings: honoured per model, reaching the engine, or refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError
from qwenhost.engine.llamacpp.decoder import DEFAULT_LOOP_GUARD, LoopGuard
from qwenhost.main import engine_config
from tests.support.config import config_path, one_model


def test_the_defaults_are_the_documented_guard(tmp_path: Path) -> None:
    model = one_model(tmp_path, "")
    assert (model.constrained_loop_tokens, model.constrained_loop_period) == (128, 32)
    assert engine_config(model).loop_guard == DEFAULT_LOOP_GUARD == LoopGuard(128, 32)


@pytest.mark.parametrize(
    ("body", "guard"),
    [
        ("constrained_loop_tokens = 0\n", LoopGuard(0, 32)),
        ("constrained_loop_tokens = 64\n", LoopGuard(64, 32)),
        ("constrained_loop_tokens = 65536\nconstrained_loop_period = 256\n", LoopGuard(65536, 256)),
        ("constrained_loop_tokens = 512\nconstrained_loop_period = 8\n", LoopGuard(512, 8)),
        ("constrained_loop_tokens = 0\nconstrained_loop_period = 256\n", LoopGuard(0, 256)),
    ],
)
def test_set_values_reach_the_engine(tmp_path: Path, body: str, guard: LoopGuard) -> None:
    assert engine_config(one_model(tmp_path, body)).loop_guard == guard


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "constrained_loop_tokens = 63\n",
            "constrained_loop_tokens must be 0 (no loop guard) or from 64 to 65536, not 63",
        ),
        (
            "constrained_loop_tokens = 1\n",
            "constrained_loop_tokens must be 0 (no loop guard) or from 64 to 65536, not 1",
        ),
        (
            "constrained_loop_tokens = -1\n",
            "constrained_loop_tokens must be 0 (no loop guard) or from 64 to 65536, not -1",
        ),
        ("constrained_loop_tokens = 65537\n", "constrained_loop_tokens must be 0 (no loop guard) or from 64 to 65536"),
        ("constrained_loop_period = 0\n", "constrained_loop_period must be from 1 to 64 (half of constrained_loop_"),
        ("constrained_loop_period = 65\n", "constrained_loop_period must be from 1 to 64 (half of constrained_loop_"),
        (
            "constrained_loop_tokens = 1024\nconstrained_loop_period = 257\n",
            "constrained_loop_period must be from 1 to 256, not 257",
        ),
        (
            "constrained_loop_tokens = 0\nconstrained_loop_period = 0\n",
            "constrained_loop_period must be from 1 to 256, not 0",
        ),
        ("constrained_loop_tokens = 128.0\n", "models[0].constrained_loop_tokens: must be an integer, not 128.0"),
    ],
)
def test_out_of_range_values_are_refused_by_name(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        one_model(tmp_path, body)
    assert str(info.value).startswith(f"{config_path(tmp_path)}: "), str(info.value)
    assert message in str(info.value), str(info.value)
