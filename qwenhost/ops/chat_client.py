"""``qwenhost chat``: a terminal REPL over any DashScope-compatible server — streamed answers, the thought shown
apart, slash commands, multi-line input, readline history, and every error as one readable line."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

DIM, RESET = "\033[2m", "\033[0m"
BLOCK = '"""'  # a line holding only this opens (and closes) a multi-line message
MAX_ERROR_CHARS = 300  # an error body that is not an envelope is cut to this much
MAX_LINE_CHARS = 4 * 1024 * 1024  # one SSE line larger than this is a broken stream
HISTORY_LINES = 1000  # readline history kept in the history file

HELP = f"""\
Type a message and press Enter. Multi-line: end a line with \\ to continue it, or put {BLOCK} alone on a
line, then the text, then {BLOCK} again. A message that starts with / is a command (// sends a literal /):
  /model [NAME]          show or change the model (or alias)
  /system [TEXT]         set the system prompt (no TEXT: remove it); kept by /clear
  /think [on|off|default] show or set enable_thinking (default: the model's own)
  /usage                 show or hide the usage line after each answer
  /clear                 start a new conversation
  /help                  this text
  /quit                  leave (Ctrl-D too)"""


class ChatError(Exception):
    """A failed request, said in one line."""


@dataclass
class Conversation:
    model: str
    system: str | None = None
    thinking: bool | None = None  # None: the server's default for the model
    show_usage: bool = False
    max_tokens: int | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)

    def request(self, text: str) -> dict[str, Any]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [*system, *self.turns, {"role": "user", "content": text}],
            "stream": True,
            "stream_options": {"include_usage": True},  # asked always, so /usage can show the last answer's
        }
        if self.thinking is not None:
            body["enable_thinking"] = self.thinking
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body


class Terminal:
    """Where the conversation is written: the thought dimmed on a TTY, marked with [thinking] otherwise."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.is_tty = out.isatty()
        self._in_thought = False
        self._in_reply = False  # something of the current reply is on screen, so end_reply ends its line

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()  # streamed: each delta is shown as it comes

    def thought(self, text: str) -> None:
        self._in_reply = True
        if not self._in_thought:
            self._in_thought = True
            self._write(DIM if self.is_tty else "[thinking]\n")
        self._write(text)

    def answer(self, text: str) -> None:
        self._in_reply = True
        self._end_thought()
        self._write(text)

    def end_reply(self) -> None:
        self._end_thought()
        if self._in_reply:
            self._in_reply = False
            self._write("\n")

    def _end_thought(self) -> None:
        if self._in_thought:
            self._in_thought = False
            self._write(f"{RESET}\n\n" if self.is_tty else "\n[answer]\n")

    def note(self, text: str) -> None:
        self._write(f"{DIM}{text}{RESET}\n" if self.is_tty else f"{text}\n")

    def error(self, text: str) -> None:
        print(f"error: {' '.join(text.split())}", file=self.err, flush=True)  # always one line


def read_message(read_line: Callable[[str], str], prompts: tuple[str, str]) -> str:
    """One message: a line, lines joined by a trailing backslash, or a block between two lines of three quotes.
    Raises EOFError at the end of input (an unfinished message is dropped with it)."""
    first, more = prompts
    line = read_line(first)
    if line.strip() == BLOCK:
        lines: list[str] = []
        while (line := read_line(more)).strip() != BLOCK:
            lines.append(line)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read_line(more)
    return "\n".join([*lines, line])


def describe_error(status: int, text: str) -> str:
    """The DashScope envelope's code and message (JSON or one SSE data line); else the start of the body."""
    payload = text.strip().removeprefix("data:").strip()
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(payload)["error"]
        request_id = json.loads(payload).get("request_id")
        suffix = f" (request {request_id})" if request_id else ""
        return f"{status or ''} {error.get('code') or 'error'}: {error['message']}{suffix}".strip()
    return f"{status}: {text[:MAX_ERROR_CHARS] or 'empty answer'}"


def _chunks(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if len(line) > MAX_LINE_CHARS:
            raise ChatError("the server sent an event larger than 4 MiB")
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise ChatError(describe_error(0, data))
        yield chunk


@dataclass
class Reply:
    """What one answer adds to the conversation, and its numbers for the usage line."""

    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    started_s: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None

    def usage_line(self) -> str:
        parts = []
        if self.usage:
            u = self.usage
            cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
            reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens")
            parts.append(f"prompt {u['prompt_tokens']}" + (f" (cached {cached})" if cached is not None else ""))
            parts.append(
                f"completion {u['completion_tokens']}" + (f" (reasoning {reasoning})" if reasoning is not None else "")
            )
        now = time.monotonic()
        if self.first_token_s is not None:
            parts.append(f"TTFT {self.first_token_s - self.started_s:.2f} s")
            if self.usage and now > self.first_token_s:
                parts.append(f"{self.usage['completion_tokens'] / (now - self.first_token_s):.1f} tokens/s")
        parts.append(f"{now - self.started_s:.2f} s")
        return "[usage] " + " · ".join(parts)


def stream_reply(client: httpx.Client, body: dict[str, Any], term: Terminal, reply: Reply) -> None:
    """Streams one answer to the terminal, filling ``reply``; a failure raises ChatError."""
    try:
        with client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise ChatError(describe_error(response.status_code, response.read().decode(errors="replace")))
            for chunk in _chunks(response):
                reply.usage = chunk.get("usage") or reply.usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    thought, text = delta.get("reasoning_content") or "", delta.get("content") or ""
                    if (thought or text) and reply.first_token_s is None:
                        reply.first_token_s = time.monotonic()
                    if thought:  # the thought is shown, never added to the history
                        term.thought(thought)
                    if text:
                        term.answer(text)
                        reply.text.append(text)
    except httpx.HTTPError as exc:
        raise ChatError(f"cannot reach {client.base_url}: {exc or type(exc).__name__}") from exc
    except ValueError as exc:  # a data line that is not JSON
        raise ChatError(f"the server sent a malformed event: {exc}") from exc


def _set_thinking(convo: Conversation, term: Terminal, arg: str) -> None:
    choices = {"on": True, "off": False, "default": None}
    if arg and arg not in choices:
        term.error(f"/think takes on, off or default, not {arg!r}")
        return
    if arg:
        convo.thinking = choices[arg]
    shown = {True: "on", False: "off", None: "the model's default"}[convo.thinking]
    term.note(f"thinking: {shown}")


def run_command(line: str, convo: Conversation, term: Terminal) -> bool:
    """Runs one slash command; False when the REPL should end."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        return False
    if name == "/model":
        convo.model = arg or convo.model
        term.note(f"model: {convo.model}")
    elif name == "/system":
        convo.system = arg or None
        term.note(f"system prompt: {arg!r}" if arg else "system prompt removed")
    elif name == "/think":
        _set_thinking(convo, term, arg)
    elif name == "/usage":
        convo.show_usage = not convo.show_usage
        term.note(f"usage line: {'on' if convo.show_usage else 'off'}")
    elif name == "/clear":
        convo.turns.clear()
        term.note("new conversation")
    elif name == "/help":
        term.note(HELP)
    else:
        term.error(f"unknown command {name} (/help lists them; // sends a message starting with /)")
    return True


def _send(client: httpx.Client, convo: Conversation, term: Terminal, text: str) -> None:
    reply = Reply()
    try:
        stream_reply(client, convo.request(text), term, reply)
    except ChatError as exc:
        term.end_reply()
        term.error(str(exc))
        return
    except KeyboardInterrupt:  # Ctrl-C stops this answer, not the REPL; what was shown is kept
        term.end_reply()
        term.note("(stopped)")
    else:
        term.end_reply()
    convo.turns += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(reply.text)}]
    if convo.show_usage:
        term.note(reply.usage_line())


def _open_history(path: Path | None) -> Callable[[], None]:
    """Line editing and history through readline, on a terminal; returns what saves the history at exit."""
    if not sys.stdin.isatty():
        return lambda: None  # piped input: no prompt, no line editing (readline would write escape codes)
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input() still works
        return lambda: None
    readline.set_history_length(HISTORY_LINES)
    if path is None:
        return lambda: None
    with contextlib.suppress(FileNotFoundError):
        readline.read_history_file(path)

    def save() -> None:
        try:
            readline.write_history_file(path)
        except OSError as exc:
            print(f"qwenhost: the chat history was not saved to {path}: {exc.strerror}", file=sys.stderr)

    return save


def quiet_library_logs() -> None:
    """httpx logs every request at INFO (``HTTP Request: POST …``): in a chat that is noise amid the answer."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def chat_repl(
    base_url: str,
    model: str,
    api_key: str,
    *,
    system: str | None = None,
    max_tokens: int | None = None,
    history_path: Path | None = None,
    library_logs: bool = False,
) -> int:
    if not library_logs:
        quiet_library_logs()
    term = Terminal(sys.stdout, sys.stderr)
    convo = Conversation(model=model, system=system, max_tokens=max_tokens)
    prompts = ("> ", "… ") if sys.stdin.isatty() else ("", "")
    save_history = _open_history(history_path)
    print(f"chatting with {model} at {base_url} — /help for commands, /quit or Ctrl-D to leave", file=sys.stderr)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(30.0, read=None)) as client:
        try:
            while True:
                try:
                    text = read_message(input, prompts)
                except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line being typed
                    print(file=sys.stderr)
                    continue
                if text.startswith("/") and not text.startswith("//"):
                    if not run_command(text.strip(), convo, term):
                        return 0
                elif text.strip():
                    _send(client, convo, term, text.removeprefix("/"))
        except EOFError:
            return 0
        finally:
            save_history()
