"""``qwenhost chat``: a small terminal client that streams from any DashScope-compatible server."""

from __future__ import annotations

import json
import sys

import httpx

DIM, RESET = "\033[2m", "\033[0m"


def chat_repl(base_url: str, model: str, api_key: str, *, system: str | None = None) -> int:
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    headers = {"Authorization": f"Bearer {api_key}"}
    print(f"chatting with {model} at {base_url} (empty line or Ctrl-D to quit)", file=sys.stderr)
    with httpx.Client(base_url=base_url, headers=headers, timeout=None) as client:
        while True:
            try:
                line = input("> ")
            except EOFError:
                return 0
            if not line.strip():
                return 0
            messages.append({"role": "user", "content": line})
            answer = []
            body = {"model": model, "messages": messages, "stream": True}
            with client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    print(f"error {response.status_code}: {response.read().decode()}", file=sys.stderr)
                    messages.pop()
                    continue
                for raw in response.iter_lines():
                    if not raw.startswith("data: ") or raw == "data: [DONE]":
                        continue
                    chunk = json.loads(raw[6:])
                    for choice in chunk.get("choices", []):
                        thought = choice["delta"].get("reasoning_content") or ""
                        if thought:  # thinking models: the thought, dimmed, is not part of the history
                            print(f"{DIM}{thought}{RESET}" if sys.stdout.isatty() else thought, end="", flush=True)
                        text = choice["delta"].get("content") or ""
                        answer.append(text)
                        print(text, end="", flush=True)
            print()
            messages.append({"role": "assistant", "content": "".join(answer)})
