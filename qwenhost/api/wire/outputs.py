"""``modalities``, ``audio`` and ``translation_options`` -> core types, with the rules that need no model
(spec §4.10, §4.14, §3.3). Language names and the conversation rules of translation are service/translation.py's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import AudioOutput, Message, TranslationOptions, TranslationPair
from qwenhost.speech.voices import FORMAT_ERROR, FORMATS, VOICE_ERROR, VOICES

MODALITIES_ERROR = '\'modalities\' must be ["text"] or ["text", "audio"]'
STREAM_ONLY = "'audio' output only support with stream=true"  # spec §3.3, verbatim
AUDIO_NEEDS_MODALITY = '\'audio\' is read only with modalities ["text", "audio"]'
MODALITY_NEEDS_AUDIO = (
    'modalities ["text", "audio"] needs \'audio\': {"voice": "Cherry", "format": "wav"} (voices: '
    + ", ".join(VOICES)
    + ")"
)
ONE_MEDIA_KIND = "With audio output, a user message may carry one kind of non-text content only: messages[{}]"


def read_outputs(body: Mapping[str, Any], messages: tuple[Message, ...], *, stream: bool, n: int) -> dict[str, Any]:
    """The request fields ``modalities``, ``audio_output`` and ``translation_options``."""
    modalities = body.get("modalities") or ["text"]
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"} or "text" not in modalities:
        raise InvalidParameter(MODALITIES_ERROR)
    audio = _audio(body.get("audio"), "audio" in modalities)
    if audio is not None:
        if not stream:
            raise InvalidParameter(STREAM_ONLY)
        if n != 1:
            raise InvalidParameter("The n parameter must be 1 with audio output.")
        _one_media_kind(messages)
    return {
        "modalities": tuple(dict.fromkeys(modalities)),
        "audio_output": audio,
        "translation_options": _translation(body.get("translation_options")),
    }


def _audio(raw: Any, is_asked: bool) -> AudioOutput | None:
    if raw is None:
        if is_asked:
            raise InvalidParameter(MODALITY_NEEDS_AUDIO)
        return None
    if not isinstance(raw, Mapping):
        raise InvalidParameter("'audio' must be an object with voice and format")
    if not is_asked:
        raise InvalidParameter(AUDIO_NEEDS_MODALITY)
    voice, fmt = raw.get("voice"), raw.get("format")
    if voice not in VOICES:
        raise InvalidParameter(VOICE_ERROR)
    if fmt not in FORMATS:
        raise InvalidParameter(FORMAT_ERROR)
    return AudioOutput(voice=voice, format=fmt)


def _one_media_kind(messages: tuple[Message, ...]) -> None:
    """Qwen-Omni's rule: one non-text modality per user message (spec §4.10); a video file with its sound
    track and a frame list both count as video."""
    for i, message in enumerate(messages):
        kinds = {"video" if m.kind == "video_frames" else m.kind for m in message.media}
        if message.role == "user" and len(kinds) > 1:
            raise InvalidParameter(ONE_MEDIA_KIND.format(i))


def _translation(raw: Any) -> TranslationOptions | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidParameter("'translation_options' must be an object")
    unknown = sorted(set(raw) - {"source_lang", "target_lang", "terms", "tm_list", "domains"})
    if unknown:
        raise InvalidParameter(f"translation_options has unknown keys: {', '.join(unknown)}")
    langs = {}
    for key in ("source_lang", "target_lang"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidParameter(f'translation_options.{key} is required: a language name such as "English"')
        langs[key] = value.strip()
    domains = raw.get("domains")
    if domains is not None and not isinstance(domains, str):
        raise InvalidParameter("translation_options.domains must be a string")
    return TranslationOptions(
        terms=_pairs(raw.get("terms"), "terms"),
        tm_list=_pairs(raw.get("tm_list"), "tm_list"),
        domains=domains.strip() or None if domains is not None else None,
        **langs,
    )


def _pairs(raw: Any, key: str) -> tuple[TranslationPair, ...]:
    if raw is None:
        return ()
    shape = f'translation_options.{key} must be a list of {{"source": "…", "target": "…"}}'
    if not isinstance(raw, list):
        raise InvalidParameter(shape)
    out = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise InvalidParameter(shape)
        source, target = item.get("source"), item.get("target")
        if not isinstance(source, str) or not isinstance(target, str) or not source.strip():
            raise InvalidParameter(shape)
        out.append(TranslationPair(source, target))
    return tuple(out)
