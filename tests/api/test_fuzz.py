"""Randomised bad input: every body gets 200 or a 4xx DashScope envelope — never a 500 or a hang."""

from __future__ import annotations

import json
import random
from typing import Any

from qwenhost.api.wire.request import KNOWN_FIELDS
from tests.api.test_contract import URL, make_client

ATOMS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**40,
    0.5,
    -3.7,
    1e308,
    "",
    "x",
    "qwen-plus",
    "none",
    "auto",
    "ephemeral",
    "json_object",
    "\u0000",
    "😀" * 3,
    [],
    {},
    [1, 2],
    ["a"],
    [[1, 2]],
    {"type": "text"},
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.6:
        return rng.choice(ATOMS)
    if roll < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = [
        "type",
        "text",
        "role",
        "content",
        "url",
        "name",
        "function",
        "arguments",
        "image_url",
        "json_schema",
        "schema",
        "include_usage",
        "cache_control",
        "tool_calls",
        "id",
        "partial",
        "data",
        "format",
    ]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def random_message(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return random_value(rng)
    message: dict[str, Any] = {"role": rng.choice(["user", "system", "assistant", "tool", "developer", None, 3])}
    if rng.random() < 0.9:
        message["content"] = rng.choice(
            ["hello", "", random_value(rng), [{"type": "text", "text": "hi"}, random_value(rng)]]
        )
    if rng.random() < 0.2:
        message["tool_calls"] = random_value(rng)
    return message


def random_body(rng: random.Random) -> Any:
    if rng.random() < 0.5:  # a valid request with one field set to something random
        body: dict[str, Any] = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]}
        body[rng.choice(sorted(KNOWN_FIELDS))] = random_value(rng)
        return body
    body = {
        "model": rng.choice(["qwen-plus", "qwen-plus", "nope", None, 7]),
        "messages": [random_message(rng) for _ in range(rng.randint(0, 3))],
    }
    for field in rng.sample(sorted(KNOWN_FIELDS), rng.randint(0, 6)):
        body[field] = random_value(rng)
    body["max_tokens"] = rng.choice([4, 4, None, 0, "4"])
    return body


def test_random_bodies_never_break_the_server() -> None:
    client = make_client()
    rng = random.Random(20261125)
    statuses: dict[int, int] = {}
    for _ in range(400):
        body = random_body(rng)
        r = client.post(URL, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 404), (r.status_code, body, r.text)
        if r.status_code != 200:
            text = r.text[6:] if r.text.startswith("data: ") else r.text
            error = json.loads(text)["error"]
            assert error["message"] and error["code"] and error["type"]
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0
    assert (
        client.post(URL, json={"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]}).status_code
        == 200
    )
