"""DashScope's Omni voices, the local voice each one maps to, and the language a text is spoken in."""

from __future__ import annotations

# Qwen-Omni's voices and its validator's wording (spec §4.10, §3.3).
VOICES = ("Cherry", "Serena", "Ethan", "Chelsie")
VOICE_ERROR = "Input should be 'Cherry', 'Serena', 'Ethan' or 'Chelsie': parameters.audio.voice"
FORMATS = ("wav",)
FORMAT_ERROR = "Input should be 'wav': parameters.audio.format"

# Each voice is an eSpeak NG variant, distinct from the others: three female voices and one male voice,
# as DashScope describes Cherry, Serena, Chelsie (female) and Ethan (male).
ESPEAK_VARIANTS = {"Cherry": "f3", "Serena": "f2", "Ethan": "m3", "Chelsie": "f4"}

# Languages the engine is known to speak well enough; "auto" reads the language from each sentence.
LANGUAGES = ("auto", "cmn", "en-us", "en", "yue")
CJK_SHARE = 0.3  # a sentence whose letters are this much CJK is Mandarin (research §3.3)


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


def detect_language(text: str) -> str:
    """``cmn`` when CJK characters are at least ``CJK_SHARE`` of the letters, else ``en-us``."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en-us"
    cjk = sum(1 for ch in letters if _is_cjk(ch))
    return "cmn" if cjk / len(letters) >= CJK_SHARE else "en-us"


def espeak_voice(voice: str, language: str) -> str:
    """The eSpeak NG voice name for a DashScope voice in ``language`` (``cmn+f3`` …)."""
    return f"{language}+{ESPEAK_VARIANTS[voice]}"
