"""The domain's nouns as frozen dataclasses: a validated chat request and its parts, and usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
MediaKind = Literal["image", "video", "video_frames", "audio"]
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    cache_control: bool = False


@dataclass(frozen=True, slots=True)
class MediaPart:
    """An image, a video (file or frame list) or an audio clip; pixel controls sit on the part (spec §1.2)."""

    kind: MediaKind
    sources: tuple[str, ...]
    audio_format: str | None = None
    fps: float | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None
    cache_control: bool = False


ContentPart = TextPart | MediaPart


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON text, exactly as the OpenAI wire format carries it


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | tuple[ContentPart, ...] | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    partial: bool = False
    name: str | None = None

    def text(self) -> str:
        """The message's text, with the text parts of an array content joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def media(self) -> tuple[MediaPart, ...]:
        if isinstance(self.content, tuple):
            return tuple(p for p in self.content if isinstance(p, MediaPart))
        return ()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NamedToolChoice:
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Resolved sampling settings of one choice. ``top_k == 0`` disables top-k."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # OpenAI logit_bias; also how ignore_eos bans EOG tokens


@dataclass(frozen=True, slots=True)
class SamplingOverrides:
    """What the request itself set; ``None`` means the model's configured default applies."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    top_k_disabled: bool = False
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None

    def resolve(self, defaults: SamplingParams) -> SamplingParams:
        top_k = 0 if self.top_k_disabled else (self.top_k if self.top_k is not None else defaults.top_k)
        return SamplingParams(
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            top_k=top_k,
            presence_penalty=(defaults.presence_penalty if self.presence_penalty is None else self.presence_penalty),
            frequency_penalty=(
                defaults.frequency_penalty if self.frequency_penalty is None else self.frequency_penalty
            ),
            repetition_penalty=(
                defaults.repetition_penalty if self.repetition_penalty is None else self.repetition_penalty
            ),
            seed=defaults.seed if self.seed is None else self.seed,
        )


@dataclass(frozen=True, slots=True)
class StopRule:
    """``stop`` of spec §1.3 #28: strings, single token ids, or token-id sequences (never mixed)."""

    strings: tuple[str, ...] = ()
    token_sequences: tuple[tuple[int, ...], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.strings or self.token_sequences)


@dataclass(frozen=True, slots=True)
class SearchOptions:
    forced_search: bool = False
    search_strategy: str = "turbo"
    enable_search_extension: bool = False
    enable_source: bool = False  # native protocol only: output.search_info (spec §4.8)


@dataclass(frozen=True, slots=True)
class AudioOutput:
    """``audio`` of a request with ``modalities: ["text", "audio"]`` (spec §4.10): the voice and the format."""

    voice: str
    format: str = "wav"


@dataclass(frozen=True, slots=True)
class TranslationPair:
    """A term or a translation-memory entry of ``translation_options`` (spec §4.14)."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class TranslationOptions:
    """``translation_options`` (spec §4.14): languages by their English names; ``source_lang`` may be auto."""

    source_lang: str
    target_lang: str
    terms: tuple[TranslationPair, ...] = ()
    tm_list: tuple[TranslationPair, ...] = ()
    domains: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A validated ``/chat/completions`` body. Built by api/wire/request.py; nothing here is wire-shaped."""

    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_input_tokens: int | None = None
    n: int = 1
    stop: StopRule = field(default_factory=StopRule)
    logprobs: bool = False
    top_logprobs: int = 0
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = False
    tool_stream: bool = False
    response_format: ResponseFormat | None = None
    enable_thinking: bool | None = None
    thinking_budget: int | None = None
    preserve_thinking: bool | None = None
    reasoning_effort: str | None = None
    vl_high_resolution_images: bool = False
    modalities: tuple[str, ...] = ("text",)
    audio_output: AudioOutput | None = None  # set exactly when modalities has "audio"
    enable_search: bool = False
    search_options: SearchOptions | None = None
    enable_code_interpreter: bool = False
    translation_options: TranslationOptions | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # OpenAI extension, not in DashScope's reference
    ignore_eos: bool = False  # qwenhost/vLLM/llama-server extension for benchmarks
    resolve_oss: bool = False  # X-DashScope-OssResourceResolve: enable — oss:// media URLs name uploads

    @property
    def has_cache_markers(self) -> bool:
        return any(isinstance(m.content, tuple) and any(p.cache_control for p in m.content) for m in self.messages)

    @property
    def speaks(self) -> bool:
        return self.audio_output is not None

    @property
    def is_partial(self) -> bool:
        return bool(self.messages) and self.messages[-1].role == "assistant" and self.messages[-1].partial


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    bytes: tuple[int, ...]
    logprob: float | None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    bytes: tuple[int, ...]
    logprob: float | None
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheReport:
    """What the engine reused or pinned for one request's prompt (spec §2.2, §4.2, §4.3)."""

    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    is_explicit: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cache: CacheReport = CacheReport()
    reasoning_tokens: int | None = None
    text_tokens: int | None = None
    image_tokens: int | None = None
    video_tokens: int | None = None
    audio_tokens: int | None = None  # of the prompt (audio input)
    output_audio_tokens: int | None = None  # of the spoken answer; counted in completion_tokens (docs/speech…)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class PixelDefaults:
    """A vision model's pixel limits (spec §4.11): defaults and the bounds a request may move them to."""

    image_min: int
    image_max: int
    image_max_limit: int
    video_min: int
    video_min_limit: int
    video_max: int
    video_max_limit: int
    video_total: int
    max_frames: int  # upper bound of a frame list (spec: 512 for Qwen2.5-VL / Qwen3-VL, 80 for others)
