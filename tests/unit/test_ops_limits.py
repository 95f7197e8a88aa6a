"""The limit policy: which scopes a request counts against, the burst cap, and [limits.models] names
resolved to served models (an alias limits the model behind it)."""

from __future__ import annotations

import pytest

from qwenhost.config import ConfigError, Settings
from qwenhost.config_features import LimitsConfig, ModelLimit
from qwenhost.main import limit_policy
from qwenhost.ops.limits import Limit, LimitPolicy, RateInfo, ScopeLimit, Window
from qwenhost.service.models import ModelRegistry
from tests.unit.test_aliases import served


def test_scopes_key_and_key_on_model() -> None:
    policy = LimitPolicy(Limit(rpm=60), {"big": Limit(tpm=1000)}, burst_factor=2.0)
    assert policy.scopes("alice", Limit(), "small") == [ScopeLimit("key:alice|model:small", 60, None, 2)]
    assert policy.scopes("alice", Limit(rpm=3), "big") == [
        ScopeLimit("key:alice", 3, None, 1),  # 3/60 x 2, rounded up, at least 1
        ScopeLimit("key:alice|model:big", None, 1000, None),
    ]
    assert LimitPolicy().scopes("bob", Limit(), "m") == []  # nothing limited: no store write at all


def test_windows_restart_each_minute_and_second() -> None:
    window = Window(minute_start=60, minute_requests=5, minute_tokens=9, second_start=61, second_requests=2)
    assert window.at(61.5) == window
    assert window.at(62.0) == Window(60, 5, 9, 62, 0)
    assert window.at(120.0) == Window(120, 0, 0, 120, 0)


def test_headers_report_the_tightest_scope() -> None:
    info = RateInfo()
    info = info.tighter(ScopeLimit("a", 10, None, None), Window(60, 4, 0, 0, 0), 70.0)
    info = info.tighter(ScopeLimit("b", 5, 100, None), Window(60, 3, 40, 0, 0), 70.0)
    assert info.headers() == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "50s",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "60",
        "x-ratelimit-reset-tokens": "50s",
    }


def test_model_limits_by_alias() -> None:
    registry = ModelRegistry([served("m")])
    settings = Settings(limits=LimitsConfig(rpm=5, models=(("qwen-max", ModelLimit(rpm=1)),)))
    assert limit_policy(settings, registry).models == {"m": Limit(rpm=1)}
    twice = Settings(limits=LimitsConfig(models=(("qwen-max", ModelLimit(1)), ("qwen-plus", ModelLimit(2)))))
    with pytest.raises(ConfigError, match="already has limits"):
        limit_policy(twice, registry)
    with pytest.raises(ConfigError, match="no served model answers 'gpt-4'"):
        limit_policy(Settings(limits=LimitsConfig(models=(("gpt-4", ModelLimit(1)),))), registry)
