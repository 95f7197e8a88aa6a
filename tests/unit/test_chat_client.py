"""The chat REPL's pieces that need no server (ops/chat_client.py): multi-line input, error lines, commands and
how the thought is set apart. The REPL against the real server is tests/e2e/test_chat_client.py."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from qwenhost.ops.chat_client import DIM, RESET, Conversation, Terminal, describe_error, read_message, run_command

ENVELOPE = (
    '{"error": {"code": "model_not_found", "param": null, "message": "The model `x` does not exist.", '
    '"type": "invalid_request_error"}, "request_id": "r-1"}'
)


def lines(*typed: str) -> Callable[[str], str]:
    """A stand-in for input(): the typed lines, then end of input."""
    queue = list(typed)

    def read(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


PROMPTS = ("> ", "… ")


def test_one_line_is_one_message() -> None:
    assert read_message(lines("hello", "next"), PROMPTS) == "hello"


def test_a_trailing_backslash_continues_the_message() -> None:
    assert read_message(lines("first \\", "second\\", "third", "next"), PROMPTS) == "first \nsecond\nthird"


def test_a_triple_quote_block_is_one_message() -> None:
    read = lines('"""', "def f():", "    return 1 \\", "", '"""', "next")
    assert read_message(read, PROMPTS) == "def f():\n    return 1 \\\n"
    assert read_message(read, PROMPTS) == "next"


def test_end_of_input_inside_a_block_ends_the_repl() -> None:
    with pytest.raises(EOFError):
        read_message(lines('"""', "unfinished"), PROMPTS)


def test_error_envelope_becomes_code_and_message() -> None:
    assert describe_error(404, ENVELOPE) == "404 model_not_found: The model `x` does not exist. (request r-1)"
    assert describe_error(400, f"data: {ENVELOPE}\n\n").startswith("400 model_not_found: The model")
    assert describe_error(0, ENVELOPE).startswith("model_not_found:")  # an error frame mid-stream has no status
    assert describe_error(502, "<html>bad gateway</html>") == "502: <html>bad gateway</html>"


def terminal(is_tty: bool) -> tuple[Terminal, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    term = Terminal(out, err)
    term.is_tty = is_tty
    return term, out, err


@pytest.mark.parametrize("is_tty", [True, False])
def test_the_thought_is_set_apart_from_the_answer(is_tty: bool) -> None:
    term, out, _ = terminal(is_tty)
    for piece in ("let me", " think"):
        term.thought(piece)
    term.answer("42")
    term.end_reply()
    expected = f"{DIM}let me think{RESET}\n\n42\n" if is_tty else "[thinking]\nlet me think\n[answer]\n42\n"
    assert out.getvalue() == expected


def test_an_error_is_one_line_on_stderr() -> None:
    term, out, err = terminal(False)
    term.error("first line\nsecond   line")
    assert (out.getvalue(), err.getvalue()) == ("", "error: first line second line\n")


def test_commands_change_the_conversation() -> None:
    term, _, err = terminal(False)
    convo = Conversation(model="qwen-plus")
    convo.turns.append({"role": "user", "content": "hi"})
    for command in ("/model qwen-max", "/system be brief", "/think off", "/usage", "/clear"):
        assert run_command(command, convo, term)
    body = convo.request("hello")
    assert body["model"] == "qwen-max" and body["enable_thinking"] is False and convo.show_usage
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert run_command("/think default", convo, term) and "enable_thinking" not in convo.request("x")
    assert run_command("/think maybe", convo, term)
    assert run_command("/nope", convo, term)
    assert err.getvalue().count("\n") == 2 and "unknown command /nope" in err.getvalue()
    assert not run_command("/quit", convo, term)
