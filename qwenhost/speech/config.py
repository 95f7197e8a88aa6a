"""[speech]: whether answers may be spoken, the language eSpeak NG speaks, and the bounds
(docs/speech-and-translation.md). Read by qwenhost/config.py; strict: unknown keys are refused there."""

from __future__ import annotations

from dataclasses import dataclass

from qwenhost.speech.voices import LANGUAGES


@dataclass(frozen=True, slots=True)
class SpeechConfig:
    enabled: bool = True  # false: modalities ["text", "audio"] is refused ("This model does not support audio output.")
    language: str = "auto"  # "auto": Mandarin or English per sentence, from its characters; or one of LANGUAGES
    timeout_s: float = 30.0  # one sentence's synthesis, at most; past it the stream ends with an error
    max_pending: int = 8  # sentences of one answer waiting for synthesis; past it the answer waits for its audio

    def problems(self) -> list[str]:
        out = []
        if self.language not in LANGUAGES:
            out.append(f"language: must be one of {', '.join(LANGUAGES)}, not {self.language!r}")
        if self.timeout_s <= 0:
            out.append("timeout_s: must be more than 0")
        if self.max_pending < 1:
            out.append("max_pending: must be at least 1")
        return out
