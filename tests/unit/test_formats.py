"""formats/: family records and detection from GGUF metadata, template and special tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.config import ConfigError, load_settings
from qwenhost.formats.registry import FORMATS, detect_format, get_format
from qwenhost.templates.renderer import builtin_template

LLAMA_TEMPLATES = Path("/work/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates")

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


@pytest.mark.skipif(not LLAMA_TEMPLATES.is_dir(), reason="the vendored llama.cpp templates are not on this machine")
@pytest.mark.parametrize(
    ("file", "arch", "family"),
    [
        ("Qwen-Qwen3-0.6B.jinja", "qwen3", "qwen3"),
        ("Qwen-QwQ-32B.jinja", "qwen2", "qwq"),
        ("Qwen-Qwen2.5-7B-Instruct.jinja", "qwen2", "qwen2.5"),
        ("Qwen3-Coder.jinja", "qwen3moe", "qwen3-coder"),
        ("Qwen3.5-4B.jinja", "qwen35", "qwen3.5"),
        ("Qwen3.5-4B.jinja", "qwen3", "qwen3.5"),
    ],
)
def test_detection_on_real_qwen_templates(file: str, arch: str, family: str) -> None:
    template = (LLAMA_TEMPLATES / file).read_text("utf-8")
    assert detect_format(meta(arch), template).name == family


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
