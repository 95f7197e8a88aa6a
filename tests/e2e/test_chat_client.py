"""``qwenhost chat`` driven through a pipe against the real server: no log line in the conversation, the answer
streams, errors are one readable line and the REPL goes on, commands work, the thought is shown apart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import REPO, RunningServer, running_server

pytestmark = pytest.mark.e2e

ANSWER_TIMEOUT_S = 180.0  # the embedded model on a busy 2-core machine; no tight timings
# What a log record looks like with the CLI's logging format ("2026-12-02 08:00:00,123 INFO name: ..."), with
# logging's default one ("INFO:name:..."), or httpx's request line in any format. Not a bare date or level word:
# the model's answer may hold one (it once answered with a timestamp).
LEVEL = r"(DEBUG|INFO|WARNING|ERROR|CRITICAL)"
LOG_LINE = re.compile(
    rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} {LEVEL} |\b{LEVEL} [\w.]+: |\b{LEVEL}:[\w.]+:|HTTP Request:", re.M
)


class Chat:
    """The CLI in a subprocess: stdin written line by line, stdout collected read by read (each read is one
    piece as it arrived: a streamed answer comes in many)."""

    def __init__(self, base_url: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "qwenhost", "chat", "--base-url", base_url, "--history", "", *args]
        self.process = subprocess.Popen(
            cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self.pieces: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while piece := os.read(self.process.stdout.fileno(), 65536):  # one read: what has arrived
            self.pieces.append(piece)

    @property
    def out(self) -> str:
        return b"".join(self.pieces).decode("utf-8", errors="replace")

    def type(self, *lines: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.process.stdin.flush()

    def wait_for(self, text: str, count: int = 1) -> None:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while self.out.count(text) < count:
            assert self.process.poll() is None, f"chat exited early:\n{self.out}\n{self.finish()[1]}"
            assert time.monotonic() < deadline, f"no {text!r} after {ANSWER_TIMEOUT_S} s:\n{self.out}"
            time.sleep(0.05)

    def finish(self) -> tuple[int, str]:
        """Closes stdin (end of input) and returns the exit status and stderr."""
        assert self.process.stdin is not None and self.process.stderr is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()
        status = self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        return status, self.process.stderr.read().decode("utf-8", errors="replace")


def pieces_within(chat: Chat, start: str, end: str) -> int:
    """How many reads ended between the first ``start`` and the first ``end`` after it."""
    text_so_far, ends = b"", []
    for piece in chat.pieces:
        text_so_far += piece
        ends.append(len(text_so_far.decode("utf-8", errors="replace")))
    out = chat.out
    lo = out.index(start) + len(start)
    hi = out.index(end, lo)
    return sum(1 for e in ends if lo < e <= hi)


def test_a_clean_streamed_conversation_with_usage_errors_and_commands(server: RunningServer) -> None:
    chat = Chat(server.base_url, "--model", "qwen-plus", "--max-tokens", "24")
    chat.type("/usage", "Count from 1 to 30, separated by commas.")
    chat.wait_for("[usage]")
    assert pieces_within(chat, "usage line: on\n", "[usage]") >= 3, "the answer did not stream:\n" + chat.out

    chat.type("/model no-such-model", "hello", "/model qwen-plus", '"""', "Say hi", "in two words.", '"""')
    chat.wait_for("[usage]", count=2)  # the REPL went on after the error
    chat.type("/bogus", "/quit")
    status, err = chat.finish()
    out = chat.out

    assert status == 0
    assert not LOG_LINE.search(out) and not LOG_LINE.search(err), f"a log line:\n{out}\n{err}"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, err
    assert errors[0].startswith("error: 404 model_not_found: The model `no-such-model` does not exist")
    assert errors[1].startswith("error: unknown command /bogus")
    usage = re.findall(r"^\[usage\] prompt (\d+) \(cached \d+\) · completion (\d+) · TTFT [\d.]+ s", out, re.M)
    assert len(usage) == 2
    assert int(usage[1][0]) > int(usage[0][0])  # the second turn carries the first in its history
    assert 0 < int(usage[0][1]) <= 24


@pytest.fixture(scope="module")
def thinker(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The tiny random-weight Qwen3 as a thinking-only model: its prompt opens the thought, so it always thinks."""
    config = (
        f'[[models]]\nname = "tiny-thinker"\npath = "{tiny_qwen3_gguf}"\nparallel = 1\ncontext_length = 512\n'
        'threads = 1\nfamily = "qwen3-thinking-2507"\n'
    )
    with running_server(tmp_path_factory.mktemp("chat-thinker"), config=config) as srv:
        yield srv


def test_the_thought_is_shown_apart_and_thinking_is_switchable(thinker: RunningServer) -> None:
    chat = Chat(thinker.base_url, "--model", "tiny-thinker", "--max-tokens", "4")
    chat.type("hi")
    chat.wait_for("[answer]\n")
    chat.type("/think off", "hi", "/think", "/quit")
    status, err = chat.finish()
    out = chat.out
    assert status == 0
    assert out.startswith("[thinking]\n")  # not a TTY: marked, not dimmed
    assert "\033[" not in out
    # the server's own refusal, as one line; the REPL then answers /think and /quit
    refusal = "error: 400 invalid_parameter_error: The value of the enable_thinking parameter is restricted to True."
    assert refusal in err
    assert out.rstrip().endswith("thinking: off")
