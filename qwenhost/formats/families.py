"""The known model families as data (spec §6, §4.4, §1.4): one ModelFormat record each."""

from __future__ import annotations

from qwenhost.core.types import SamplingParams
from qwenhost.formats.base import QWQ_STREAM_ONLY, ModelFormat, Signature

# The generation prompt of the thinking-only templates, as written in their Jinja source (spec §6.3).
PREFILL_IN_SOURCE = "assistant\\n<think>\\n"
QWEN3_ARCHS = ("qwen3", "qwen3moe")

CHATML = ModelFormat(
    name="chatml",
    description="plain ChatML (SmolLM2 and other non-Qwen models): no thinking",
)

QWEN2_5 = ModelFormat(
    name="qwen2.5",
    description="Qwen2.5-Instruct / Qwen2.5-Coder: Hermes JSON tool calls, no thinking (spec §6.1)",
    signature=(
        Signature(architectures=("qwen2",), template_has=("<tool_call>",)),
        Signature(architectures=("qwen2",), special_tokens=("<|im_start|>",)),
    ),
)

QWEN3 = ModelFormat(
    name="qwen3",
    description="Qwen3 (2504) hybrid thinking, on by default, /think and /no_think (spec §6.2)",
    thinking="hybrid",
    thinking_default=True,
    soft_switch=True,
    stream_only_thinking=True,  # open-source Qwen3 on DashScope (spec §4.4)
    # Spec §1.4: Qwen3 non-thinking presence 1.5; qwen3-8b…235b thinking presence 0.5.
    sampling=SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5, repetition_penalty=1.05),
    sampling_thinking=SamplingParams(
        temperature=0.6, top_p=0.95, top_k=20, presence_penalty=0.5, repetition_penalty=1.05
    ),
    signature=(
        Signature(template_has=("enable_thinking", "<think>")),
        Signature(architectures=QWEN3_ARCHS, special_tokens=("<think>",)),
    ),
)

QWQ = ModelFormat(
    name="qwq",
    description="QwQ-32B: thinking only, the prompt opens the thought (spec §6.3)",
    thinking="always",
    thinking_default=True,
    think_prefill=True,
    stream_only_thinking=True,
    stream_only_message=QWQ_STREAM_ONLY,
    sampling=SamplingParams(temperature=0.6, top_p=0.95, top_k=40, presence_penalty=0.0, repetition_penalty=1.0),
    sampling_thinking=SamplingParams(
        temperature=0.6, top_p=0.95, top_k=40, presence_penalty=0.0, repetition_penalty=1.0
    ),
    signature=(
        Signature(architectures=("qwen2",), template_has=(PREFILL_IN_SOURCE,)),
        Signature(architectures=("qwen2",), special_tokens=("<think>",)),
    ),
)

QWEN3_THINKING_2507 = ModelFormat(
    name="qwen3-thinking-2507",
    description="Qwen3-*-Thinking-2507: thinking only, the prompt opens the thought (spec §6.3)",
    thinking="always",
    thinking_default=True,
    think_prefill=True,
    stream_only_thinking=True,  # an open-source Qwen3 thinking model (spec §4.4)
    sampling=SamplingParams(temperature=0.6, top_p=0.95, top_k=20, presence_penalty=0.0, repetition_penalty=1.05),
    sampling_thinking=SamplingParams(
        temperature=0.6, top_p=0.95, top_k=20, presence_penalty=0.0, repetition_penalty=1.05
    ),
    # Hybrid Qwen3 templates write the same text when re-emitting history thoughts, but switch on enable_thinking.
    signature=(
        Signature(architectures=QWEN3_ARCHS, template_has=(PREFILL_IN_SOURCE,), template_lacks=("enable_thinking",)),
    ),
)

QWEN3_INSTRUCT_2507 = ModelFormat(
    name="qwen3-instruct-2507",
    description="Qwen3-*-Instruct-2507: no thinking, does not accept enable_thinking (spec §6.3)",
    sampling=SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5, repetition_penalty=1.05),
    signature=(Signature(architectures=QWEN3_ARCHS, template_has=("<|im_start|>",), template_lacks=("<think>",)),),
)

QWEN3_CODER = ModelFormat(
    name="qwen3-coder",
    description="Qwen3-Coder: XML tool calls, no thinking (spec §6.4)",
    tool_syntax="qwen_xml",
    signature=(Signature(template_has=("<function=",), template_lacks=("<think>",)),),
)

QWEN3_5 = ModelFormat(
    name="qwen3.5",
    description="Qwen3.5: hybrid thinking on by default, the prompt opens the thought, XML tool calls, "
    "no soft switch (spec §6.4)",
    thinking="hybrid",
    thinking_default=True,
    think_prefill=True,
    tool_syntax="qwen_xml",
    sampling=SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5, repetition_penalty=1.05),
    signature=(
        Signature(architectures=("qwen35", "qwen35moe")),
        Signature(template_has=("<function=", "<think>")),
    ),
)

# Detection tries the records in this order; the first matching signature wins, CHATML is the fallback.
DETECTION_ORDER: tuple[ModelFormat, ...] = (
    QWEN3_5,
    QWEN3_CODER,
    QWQ,
    QWEN3_THINKING_2507,
    QWEN3,
    QWEN3_INSTRUCT_2507,
    QWEN2_5,
)

ALL: tuple[ModelFormat, ...] = (CHATML, *DETECTION_ORDER)
