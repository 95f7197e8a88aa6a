"""[code_interpreter]: its own keys and the sandbox's limits in one strict table; the test seam only with
[server] test_faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError, Settings
from tests.support.config import load_toml


def test_own_keys_and_sandbox_limits(tmp_path: Path) -> None:
    settings = load_toml(
        tmp_path, '[code_interpreter]\nmax_calls = 2\nwall_timeout_s = 7\npython = "/usr/bin/python3"\n'
    )
    code = settings.code_interpreter
    assert code.enabled and code.max_calls == 2 and code.test_pinned_code is None
    assert code.sandbox.wall_timeout_s == 7.0 and code.sandbox.python == "/usr/bin/python3"
    assert Settings().code_interpreter.sandbox.concurrency == 2  # defaults hold without the table


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[code_interpreter]\nwall_time = 3\n", "unknown keys: 'wall_time'"),
        ("[code_interpreter]\nmax_calls = 0\n", "max_calls: must be at least 1"),
        ("[code_interpreter]\ncpu_seconds = -1\n", "cpu_seconds"),
        ('[code_interpreter]\ntest_pinned_code = "print(1)"\n', "needs [server] test_faults = true"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_toml(tmp_path, text)
    assert problem in str(err.value) and "[code_interpreter]" in str(err.value)
