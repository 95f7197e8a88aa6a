"""formats/: family records and detection from GGUF metadata, template and special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qwenhost.config import ConfigError, load_settings
from qwenhost.formats.registry import FORMATS, detect_format, get_format
from qwenhost.service.turn import thought_state
from qwenhost.templates.renderer import ChatTemplate, builtin_template

# Whole templates in each family's style, written from spec §6 (tests/fixtures/templates/README.md).
FAMILY_TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_INSTRUCT_2507_LIKE = "{{ '<|im_start|>' }}{% if tools %}<tool_call>{% endif %}{{ '<|im_start|>assistant\\n' }}"
THINKING_2507_LIKE = "{{- '<|im_start|>assistant\\n<think>\\n' }}{% if tools %}<tool_call>{% endif %}"
QWEN35_LIKE = "<function=x> <think> {% if enable_thinking is false %}{% endif %}"
CODER_LIKE = "<tool_call>\\n<function=example_function_name>"


def meta(arch: str) -> dict[str, str]:
    return {"general.architecture": arch}


@pytest.mark.parametrize(
    ("arch", "template", "specials", "family"),
    [
        ("llama", CHATML_TEMPLATE, (), "chatml"),
        ("qwen3", builtin_template("qwen3"), (), "qwen3"),
        ("qwen3moe", THINKING_2507_LIKE, (), "qwen3-thinking-2507"),
        ("qwen2", THINKING_2507_LIKE, (), "qwq"),
        ("qwen3", QWEN3_INSTRUCT_2507_LIKE, (), "qwen3-instruct-2507"),
        ("qwen3moe", CODER_LIKE, (), "qwen3-coder"),
        ("qwen3", QWEN35_LIKE, (), "qwen3.5"),
        ("qwen35", CHATML_TEMPLATE, (), "qwen3.5"),
        ("qwen2", "<|im_start|>{% if tools %}<tool_call>{% endif %}", (), "qwen2.5"),
        # No template in the GGUF: the vocabulary decides.
        ("qwen3", None, ("<|im_start|>", "<think>"), "qwen3"),
        ("qwen2", None, ("<|im_start|>", "<think>"), "qwq"),
        ("qwen2", None, ("<|im_start|>",), "qwen2.5"),
        ("llama", None, ("<|im_start|>",), "chatml"),
        # Vocabulary clues never override a template.
        ("qwen3", CHATML_TEMPLATE, ("<think>",), "qwen3-instruct-2507"),
    ],
)
def test_detection(arch: str, template: str | None, specials: tuple[str, ...], family: str) -> None:
    assert detect_format(meta(arch), template, specials).name == family


def family_template(file: str) -> str:
    if file.startswith("builtin:"):
        return builtin_template(file.removeprefix("builtin:"))
    return (FAMILY_TEMPLATES / file).read_text("utf-8")


@pytest.mark.parametrize(
    ("file", "arch", "family"),
    [
        ("builtin:qwen3", "qwen3", "qwen3"),
        ("qwq.jinja", "qwen2", "qwq"),
        ("qwen2.5.jinja", "qwen2", "qwen2.5"),
        ("qwen3-coder.jinja", "qwen3moe", "qwen3-coder"),
        ("qwen3.5.jinja", "qwen35", "qwen3.5"),
        ("qwen3.5.jinja", "qwen3", "qwen3.5"),
    ],
)
def test_detection_on_whole_family_templates(file: str, arch: str, family: str) -> None:
    assert detect_format(meta(arch), family_template(file)).name == family


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {}}}]
CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Beijing?"},
    {
        "role": "assistant",
        "content": "<think>\nold thought\n</think>\n\nChecking.",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Beijing"}}}
        ],
    },
    {"role": "tool", "content": "sunny"},
    {"role": "user", "content": "Thanks. And tomorrow?"},
]


@pytest.mark.parametrize(
    ("file", "arch", "fragments"),
    [
        ("builtin:qwen3", "qwen3", ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Beijing"}}']),
        ("qwq.jinja", "qwen2", ["<|im_start|>assistant\nChecking.\n<tool_call>", "<tool_response>\nsunny"]),
        ("qwen2.5.jinja", "qwen2", ["You are Qwen, created by Alibaba Cloud.", '{{"name": <function-name>']),
        ("qwen3-coder.jinja", "qwen3moe", ["<function=get_weather>\n<parameter=city>\nBeijing\n</parameter>"]),
        ("qwen3.5.jinja", "qwen35", ["<function=get_weather>\n<parameter=city>\nBeijing\n</parameter>"]),
    ],
)
def test_each_family_record_describes_its_templates(file: str, arch: str, fragments: list[str]) -> None:
    """Spec §6: the tool-call syntax the record names is the one the template renders, and the thought
    state that the service reads from the generation prompt is the one the record promises."""
    source = family_template(file)
    fmt = detect_format(meta(arch), source)
    template = ChatTemplate(source)
    for is_thinking in (True, False):
        kwargs = {fmt.thinking_kwarg: is_thinking} if fmt.thinking_kwarg and fmt.thinking == "hybrid" else {}
        text = template.render(CONVERSATION, tools=TOOLS, add_generation_prompt=True, **kwargs)
        assert all(f in text for f in fragments), text
        # Thinking families drop thoughts before the last user query (spec §6.2-6.4); others render content as is.
        assert ("old thought" in text) == (not fmt.has_thinking)
        assert (f"<function={'get_weather'}>" in text) == (fmt.tool_syntax == "qwen_xml")
        state = thought_state(text, fmt)
        if not fmt.has_thinking:
            assert state == "closed"
        elif fmt.thinking == "always" or (is_thinking and fmt.think_prefill):
            assert state == "inside" and text.endswith("<|im_start|>assistant\n<think>\n")
        elif is_thinking:
            assert state == "open" and text.endswith("<|im_start|>assistant\n")
        else:
            assert state == "closed" and text.endswith("<think>\n\n</think>\n\n")


def test_records_say_what_each_family_does() -> None:
    assert get_format("qwen3").thinking == "hybrid" and get_format("qwen3").soft_switch
    assert get_format("qwen3.5").thinking_default and get_format("qwen3.5").think_prefill
    assert not get_format("qwen3.5").soft_switch and get_format("qwen3.5").tool_syntax == "qwen_xml"
    assert get_format("qwq").thinking == "always" and get_format("qwq").sampling_thinking.top_k == 40
    assert get_format("qwen3-thinking-2507").thinking == "always"
    assert not get_format("qwen3-instruct-2507").has_thinking
    assert get_format("qwen3-coder").tool_syntax == "qwen_xml" and not get_format("qwen3-coder").has_thinking
    assert get_format("qwen3").sampling_thinking.temperature == 0.6  # spec §1.4
    assert get_format("qwen3").sampling.temperature == 0.7
    with pytest.raises(ValueError, match="unknown model family"):
        get_format("llama3")
    assert set(FORMATS) >= {"chatml", "qwen2.5", "qwen3", "qwq", "qwen3-thinking-2507", "qwen3-instruct-2507"}


def test_config_family_and_thinking_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "q.toml"
    cfg.write_text(
        '[[models]]\nname = "m"\npath = "x.gguf"\nfamily = "qwq"\nthinking_default = false\n'
        "stream_only_thinking = false\n[models.sampling_thinking]\ntemperature = 0.9\ntop_k = 0\n",
        "utf-8",
    )
    model = load_settings(str(cfg), environ={}).models[0]
    assert model.family == "qwq" and model.thinking_default is False and model.stream_only_thinking is False
    assert model.sampling_thinking.temperature == 0.9 and model.sampling_thinking.top_k == 0
    assert model.sampling.temperature is None  # unset keys keep the family's default
    cfg.write_text('[[models]]\nname = "m"\npath = "x.gguf"\nfamily = "qwen9"\n', "utf-8")
    with pytest.raises(ConfigError, match="unknown family 'qwen9'"):
        load_settings(str(cfg), environ={})
    cfg.write_text('[[models]]\nname = "m"\npath = "x.gguf"\n[models.sampling]\nmin_p = 0.1\n', "utf-8")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_settings(str(cfg), environ={})
