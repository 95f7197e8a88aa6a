"""service/translation.py: the documented prompt template and the rules of spec §4.14."""

from __future__ import annotations

from typing import Any

import pytest

from qwenhost.api.wire.request import parse_chat_request
from qwenhost.core.errors import ServeError
from qwenhost.core.types import ChatRequest
from qwenhost.service import translation

USER = [{"role": "user", "content": "Bonjour"}]


def request(options: dict[str, Any], **body: Any) -> ChatRequest:
    return parse_chat_request({"model": "qwen-mt-turbo", "messages": USER, "translation_options": options, **body})


def test_the_template_without_terms_or_memory() -> None:
    applied = translation.apply(request({"source_lang": "french", "target_lang": "English"}))
    system, user = applied.messages
    assert system.role == "system" and user.text() == "Bonjour" and applied.translation_options is None
    assert system.text() == (
        "You are a translation engine. Translate the user's text from French into English.\n\n"
        "Answer with the translation only: no notes, no explanations, no quotation marks around it."
    )


def test_a_request_without_options_is_left_alone() -> None:
    plain = parse_chat_request({"model": "qwen-mt-turbo", "messages": USER})
    assert translation.apply(plain) is plain


@pytest.mark.parametrize(
    ("options", "body", "message"),
    [
        ({"source_lang": "auto", "target_lang": "auto"}, {}, "target_lang 'auto' is not a supported language"),
        (
            {"source_lang": "Elvish", "target_lang": "English"},
            {},
            "source_lang 'Elvish' is not a supported language: auto, Chinese",
        ),
        (
            {"source_lang": "auto", "target_lang": "English"},
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "cannot be combined with tools",
        ),
    ],
)
def test_refusals(options: dict[str, Any], body: dict[str, Any], message: str) -> None:
    with pytest.raises(ServeError) as caught:
        translation.apply(request(options, **body))
    assert caught.value.status == 400 and message in caught.value.message
