"""The sandbox runs code and stays bounded: round trips, limits, the pool, cancellation, the tool."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from qwenhost.core.errors import Throttled
from qwenhost.tools.sandbox import CodeInterpreterTool, Sandbox, SandboxConfig, probe
from qwenhost.tools.sandbox.runner import uid_processes
from tests.tools.sandbox.helpers import LIMITS, make_sandbox, needs_bwrap, run

pytestmark = needs_bwrap


def test_big_integer_round_trip(sandbox: Sandbox) -> None:
    result = run(sandbox, "print(123**21)")
    assert result.ok, result.summary()
    assert result.stdout == f"{123**21}\n" == "77269364466549865653073473388030061522211723\n"


def test_numpy_and_sympy_work_inside(sandbox: Sandbox) -> None:
    code = "import numpy, sympy\nprint(numpy.arange(10).sum(), sympy.factorint(2**64 - 1)[641])"
    result = run(sandbox, code)
    assert result.ok, result.summary()
    assert result.stdout == "45 1\n"


def test_errors_and_exit_status_reach_the_summary(sandbox: Sandbox) -> None:
    result = run(sandbox, "import sys\nprint('partial')\nraise SystemExit(3)")
    assert (result.exit_status, result.stdout) == (3, "partial\n")
    assert run(sandbox, "1/0").summary().splitlines()[-2:] == ["ZeroDivisionError: division by zero", "exit status: 1"]


def test_probe_accepts_this_host() -> None:
    assert probe(SandboxConfig(**LIMITS)) is None


def test_probe_names_a_missing_bwrap() -> None:
    reason = probe(SandboxConfig(**{**LIMITS, "bwrap": "qwenhost-no-such-bwrap"}))
    assert reason is not None and "bubblewrap" in reason and "apt-get install bubblewrap" in reason


def test_probe_refuses_an_interpreter_the_pool_cannot_reach(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    (locked / "python3").symlink_to("/usr/bin/python3")
    reason = probe(SandboxConfig(**{**LIMITS, "python": str(locked / "python3")}))
    assert reason is not None and "cannot reach" in reason and "drwx------" in reason


def test_probe_refuses_a_pool_uid_that_an_account_owns() -> None:
    reason = probe(SandboxConfig(**{**LIMITS, "uid_start": 65534, "concurrency": 1}))
    assert reason is not None and "belongs to the user nobody" in reason


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"concurrency": 8, "uid_count": 4}, "exceeds the uid pool"),
        ({"uid_start": 0}, "uid_start must be at least 1000"),
        ({"output_cap_bytes": 0}, "output_cap_bytes must be positive"),
    ],
)
def test_config_refuses_bad_limits(overrides: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SandboxConfig(**overrides)


def test_pool_refuses_after_the_queue_timeout() -> None:
    sandbox = make_sandbox(concurrency=1, queue_timeout_s=0.5)

    async def scenario() -> str:
        first = asyncio.create_task(sandbox.run("import time; time.sleep(3)"))
        await asyncio.sleep(0.3)
        with pytest.raises(Throttled) as caught:
            await sandbox.run("print(1)")
        assert (await first).ok
        assert (await sandbox.run("print(2)")).stdout == "2\n"  # the slot came back
        return caught.value.message

    message = asyncio.run(scenario())
    assert message == "The code interpreter is busy: all 1 sandboxes stayed in use for 0.5 s."


def _zombie_children() -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def test_cancelling_run_kills_and_reaps_the_sandbox() -> None:
    sandbox = make_sandbox(concurrency=1)
    uid = sandbox.config.slot_uid(0)

    async def scenario() -> None:
        code = (
            "import time, subprocess\nopen('/job/x', 'w').write('1')\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)"
        )
        task = asyncio.create_task(sandbox.run(code))
        deadline = time.monotonic() + 15
        while len(uid_processes(uid)) < 4:  # bwrap, its PID 1, python, sleep
            assert time.monotonic() < deadline, "the sandbox never started"
            await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 5
        assert uid_processes(uid) == []
        assert _zombie_children() == []
        second = await sandbox.run("import os; print(os.listdir('/job'))")  # a fresh job dir, and the slot is back
        assert second.stdout == "[]\n"

    asyncio.run(scenario())


def test_tool_runs_code_and_shows_only_the_code_in_info(sandbox: Sandbox) -> None:
    tool = CodeInterpreterTool(sandbox)
    spec = tool.definition()
    assert (tool.name, spec.name, list(spec.parameters["properties"])) == ("code_interpreter",) * 2 + (["code"],)
    outcome = asyncio.run(tool.run({"code": "print(123**21)"}, timeout_s=10))
    assert outcome.text == "stdout:\n77269364466549865653073473388030061522211723\nexit status: 0"
    assert outcome.info == {"code": "print(123**21)"}


def test_tool_turns_bad_arguments_into_a_message(sandbox: Sandbox) -> None:
    tool = CodeInterpreterTool(sandbox)
    missing = asyncio.run(tool.run({}, timeout_s=10))
    assert missing.text.startswith("error: the arguments must be")
    huge = "#" * (sandbox.config.max_code_bytes + 1)
    too_long = asyncio.run(tool.run({"code": huge}, timeout_s=10))
    assert too_long.text == f"error: not run: the program is {len(huge)} bytes; the limit is 65536"
