"""service/prompt.py: one render per request with every cache marker placed in the same pass; the prompt
text is the one the template renders without markers, and the pins are where the markers stood."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from qwenhost.api.wire.request import parse_chat_request
from qwenhost.config import ModelConfig
from qwenhost.core.types import MediaPart, Message, TextPart
from qwenhost.engine.fake import FAKE_TEMPLATE, FakeBackend
from qwenhost.main import served_model
from qwenhost.service.chat import ChatService
from qwenhost.service.models import ModelRegistry
from qwenhost.service.prompt import MAX_CACHE_MARKERS, cache_pins, render, template_messages, with_cache_markers
from qwenhost.templates.renderer import ChatTemplate, builtin_template

TRIMMING = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content|trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {"fake": FAKE_TEMPLATE, "qwen3": builtin_template("qwen3"), "trimming": TRIMMING}


class CountingTemplate(ChatTemplate):
    renders = 0

    def render(self, messages: Sequence[Any], **kwargs: Any) -> str:
        CountingTemplate.renders += 1
        return super().render(messages, **kwargs)


def marked(*texts: str, marks: Sequence[int] = ()) -> Message:
    return Message("user", tuple(TextPart(t, cache_control=i in marks) for i, t in enumerate(texts)))


def unmarked(messages: Sequence[Message]) -> list[Message]:
    out = []
    for m in messages:
        if isinstance(m.content, tuple):
            parts = tuple(dataclasses.replace(p, cache_control=False) for p in m.content)
            m = dataclasses.replace(m, content=parts)
        out.append(m)
    return out


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


CONVERSATIONS = [
    [Message("system", (TextPart("Long document.", cache_control=True),)), Message("user", "Question?")],
    [marked("a", "b", "c", marks=(0, 2)), Message("assistant", "ok"), marked(" spaced \n", marks=(0,))],
    [marked("  \n", "tail", marks=(0,)), marked("x\n\n", marks=(0,)), marked(" ", marks=(0,))],  # whitespace
    [marked(*"abcdef", marks=range(6))],  # more than four markers: the last four count
]


@pytest.mark.parametrize("template_name", sorted(TEMPLATES))
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_markers_leave_the_text_as_the_template_renders_it(template_name: str, messages: list[Message]) -> None:
    template = ChatTemplate(TEMPLATES[template_name])
    rendered = render(template, messages)
    assert rendered.text == template.render(template_messages(unmarked(messages)), add_generation_prompt=True)
    wanted = min(
        MAX_CACHE_MARKERS, sum(p.cache_control for m in messages if isinstance(m.content, tuple) for p in m.content)
    )
    assert len(rendered.marks) == wanted and list(rendered.marks) == sorted(rendered.marks)


def test_a_mark_stands_after_its_part_before_trailing_whitespace() -> None:
    template = ChatTemplate(FAKE_TEMPLATE)
    rendered = render(template, [marked("Doc text \n", "more", marks=(0,))])
    assert rendered.text[: rendered.marks[0]].endswith("user\nDoc text")
    assert rendered.text[rendered.marks[0] :].startswith(" \nmore<|im_end|>")
    rendered = render(template, [marked("first", marks=(0,)), marked("second", marks=(0,))])
    assert [rendered.text[:m].rsplit("\n", 1)[1] for m in rendered.marks] == ["first", "second"]
    media = with_cache_markers(
        [Message("user", (TextPart("see"), MediaPart("image", ("u",), cache_control=True)))], "1"
    )
    assert media[0].text() == "see\ue0021:0\ue003"  # a media part's mark ends the text before it


def test_a_template_that_drops_or_repeats_a_marked_message() -> None:
    last_only = ChatTemplate("{{ messages[-1].content }}{{ messages[-1].content }}")
    rendered = render(last_only, [marked("gone", marks=(0,)), marked("twice", marks=(0,))])
    assert rendered.text == "twicetwice" and rendered.marks == (5,)  # the first place it stood


def test_client_text_that_looks_like_a_marker_is_kept() -> None:
    lookalike = "\ue0021:0\ue003 and \ue002123456789:0\ue003"
    rendered = render(ChatTemplate(FAKE_TEMPLATE), [marked(lookalike, marks=(0,))])
    assert lookalike in rendered.text and len(rendered.marks) == 1


def test_pins_are_the_tokens_shared_by_the_prefix_and_the_prompt() -> None:
    text = "<|im_start|>user\nDoc<|im_end|>"
    assert cache_pins(chars, text, [len("<|im_start|>user\nDoc")], chars(text)) == (len("<|im_start|>user\nDoc"),)
    merged = [1, 2, 99]  # the prompt's last token straddles the mark: it is not pinned
    assert cache_pins(lambda t: [1, 2, 3][: len(t)], "abc", [3], merged) == (2,)


def test_prepare_renders_once_whatever_the_markers() -> None:
    backend = FakeBackend()
    model = served_model(ModelConfig(name="m", family="qwen3"), backend)
    counting = CountingTemplate(builtin_template("qwen3"))
    model = dataclasses.replace(model, template=counting, tool_template=counting)
    service = ChatService(ModelRegistry([model]))
    parts = [{"type": "text", "text": t, "cache_control": {"type": "ephemeral"}} for t in ("a", "b", "c")]
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "system", "content": parts}, *[{"role": "user", "content": "q"}]],
    }
    for extra in ({}, {"enable_thinking": False}, {"tools": [{"type": "function", "function": {"name": "f"}}]}):
        CountingTemplate.renders = 0
        job = service.prepare(parse_chat_request({**body, **extra}), request_id="r")
        assert CountingTemplate.renders == 1
        assert len(job.generation.cache_pins) == 3
        text = job.prompt.text
        # FakeBackend: one token per character, so each pin is the length of the text before its mark.
        assert [text[:p][-1] for p in job.generation.cache_pins] == ["a", "b", "c"]
