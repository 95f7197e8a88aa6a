"""``translation_options`` (Qwen-MT, spec §4.14) -> the prompt the served model follows: the conversation rules
checked, the languages named from Qwen-MT's list, and the options written as a system message before the text.

The template (docs/speech-and-translation.md shows it): instructions in a system message — the languages, the
domain, the terms to use, the translation memory's example pairs, "answer with the translation only" — and the
client's one user message, verbatim, as the text to translate.
"""

from __future__ import annotations

import dataclasses

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import ChatRequest, Message, TranslationOptions, TranslationPair

AUTO = "auto"
# Qwen-MT's languages by their English names (the model card's list); source_lang may also be "auto".
LANGUAGES = (
    "Chinese", "English", "Japanese", "Korean", "Thai", "French", "German", "Spanish", "Arabic", "Indonesian",
    "Vietnamese", "Portuguese", "Italian", "Dutch", "Russian", "Khmer", "Lao", "Burmese",
    "Cebuano", "Traditional Chinese", "Cantonese", "Malay", "Hindi", "Hebrew", "Tamil", "Urdu", "Bengali",
    "Polish", "Romanian", "Turkish", "Czech", "Greek", "Swedish", "Hungarian", "Danish", "Finnish", "Ukrainian",
    "Bulgarian", "Serbian", "Telugu", "Afrikaans", "Armenian", "Assamese", "Asturian", "Basque", "Belarusian",
    "Bosnian", "Catalan", "Croatian", "Egyptian Arabic", "Estonian", "Galician", "Georgian", "Gujarati",
    "Icelandic", "Javanese", "Kannada", "Kazakh", "Latvian", "Lithuanian", "Luxembourgish", "Macedonian",
    "Maithili", "Maltese", "Marathi", "Mesopotamian Arabic", "Moroccan Arabic", "Najdi Arabic", "Nepali",
    "North Azerbaijani", "North Levantine Arabic", "Northern Uzbek", "Norwegian Bokmål", "Norwegian Nynorsk",
    "Occitan", "Odia", "Pangasinan", "Sicilian", "Sindhi", "Sinhala", "Slovak", "Slovenian",
    "South Levantine Arabic", "Swahili", "Tagalog", "Ta'izzi-Adeni Arabic", "Tosk Albanian", "Tunisian Arabic",
    "Venetian", "Waray", "Welsh", "Western Persian",
)  # fmt: skip
_BY_FOLDED = {name.casefold(): name for name in LANGUAGES}

ONE_USER_MESSAGE = (
    "translation_options takes exactly one message, with role user: the text to translate "
    "(Qwen-MT has no system message and no multi-turn conversation)."
)
NO_SYSTEM = "translation_options takes no system message: describe the style in translation_options.domains."
TEXT_ONLY = "translation_options translates text only: the user message has non-text content."
NOT_WITH = "translation_options cannot be combined with {}."


def language(name: str, key: str, *, allow_auto: bool) -> str:
    """A language of Qwen-MT's list by its English name (case aside), or the error listing them."""
    if allow_auto and name.casefold() == AUTO:
        return AUTO
    found = _BY_FOLDED.get(name.casefold())
    if found is None:
        allowed = ("auto, " if allow_auto else "") + ", ".join(LANGUAGES)
        raise InvalidParameter(f"translation_options.{key} {name!r} is not a supported language: {allowed}")
    return found


def check(request: ChatRequest) -> TranslationOptions:
    """The rules of spec §4.14 (one user message, no system message, no history), with the languages named."""
    options = request.translation_options
    assert options is not None
    if any(m.role == "system" for m in request.messages):
        raise InvalidParameter(NO_SYSTEM)
    if len(request.messages) != 1 or request.messages[0].role != "user":
        raise InvalidParameter(ONE_USER_MESSAGE)
    if request.messages[0].media:
        raise InvalidParameter(TEXT_ONLY)
    for what, is_set in (
        ("tools", bool(request.tools)),
        ("response_format", request.response_format is not None and request.response_format.type != "text"),
        ("enable_search", request.enable_search),
        ("enable_code_interpreter", request.enable_code_interpreter),
    ):
        if is_set:
            raise InvalidParameter(NOT_WITH.format(what))
    return dataclasses.replace(
        options,
        source_lang=language(options.source_lang, "source_lang", allow_auto=True),
        target_lang=language(options.target_lang, "target_lang", allow_auto=False),
    )


def instructions(options: TranslationOptions) -> str:
    """The system message that carries the options (the documented template)."""
    if options.source_lang == AUTO:
        lines = [f"You are a translation engine. Translate the user's text into {options.target_lang}."]
    else:
        lines = [
            f"You are a translation engine. Translate the user's text from {options.source_lang} "
            f"into {options.target_lang}."
        ]
    if options.domains:
        lines += ["", f"Domain and style: {options.domains}"]
    if options.terms:
        lines += ["", "Translate these terms exactly as given:", *_pairs(options.terms)]
    if options.tm_list:
        lines += [
            "",
            "Translation memory (follow these earlier translations where they apply):",
            *_pairs(options.tm_list),
        ]
    lines += ["", "Answer with the translation only: no notes, no explanations, no quotation marks around it."]
    return "\n".join(lines)


def _pairs(pairs: tuple[TranslationPair, ...]) -> list[str]:
    return [f"- {p.source} => {p.target}" for p in pairs]


def apply(request: ChatRequest) -> ChatRequest:
    """The request the model answers: the options as a system message before the text; options cleared."""
    if request.translation_options is None:
        return request
    options = check(request)
    system = Message(role="system", content=instructions(options))
    return dataclasses.replace(request, messages=(system, *request.messages), translation_options=None)
