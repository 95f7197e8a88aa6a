"""The speech engine interface (``synthesize(text, voice, language) -> PCM``) and the default engine: eSpeak NG
in a worker process (worker.py), one sentence at a time."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from typing import IO, Protocol

from qwenhost.speech.voices import LANGUAGES, VOICES, detect_language, espeak_voice


class SpeechError(RuntimeError):
    """The engine could not speak (not installed, crashed, too slow): the service reports it to the client."""


class Synthesizer(Protocol):
    """Text -> PCM16 mono little-endian at 24 kHz. ``voice`` is one of voices.VOICES; ``language`` an
    engine language name, or None to read it from the text. Blocking; one call at a time."""

    name: str

    def synthesize(self, text: str, voice: str, language: str | None = None) -> bytes: ...

    def close(self) -> None: ...


class EspeakEngine:
    """eSpeak NG (the espeakng-loader wheel's library and data) in a worker process started on first use and
    started again after a failure. Calls are serialized: the worker speaks one sentence at a time."""

    name = "espeak-ng"

    def __init__(self, *, language: str = "auto", timeout_s: float = 30.0) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
        self.language = language
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def synthesize(self, text: str, voice: str, language: str | None = None) -> bytes:
        if voice not in VOICES:
            raise ValueError(f"unknown voice {voice!r}")
        chosen = language or (self.language if self.language != "auto" else detect_language(text))
        request = {"text": text, "voice": espeak_voice(voice, chosen), "timeout_s": self.timeout_s}
        with self._lock:
            process = self._started()
            try:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                status, payload = _read_reply(process.stdout)
            except (OSError, SpeechError, ValueError) as exc:
                self._stop()
                raise SpeechError(f"the speech worker failed: {exc}") from exc
        if status != b"O":
            raise SpeechError(payload.decode("utf-8", "replace"))
        return payload

    def probe(self) -> None:
        """Start the worker and speak one word: raises SpeechError with the reason when speech cannot work."""
        self.synthesize("ok", VOICES[0], "en-us")

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        process = subprocess.Popen(
            [sys.executable, "-m", "qwenhost.speech.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        try:
            status, payload = _read_reply(process.stdout)
        except SpeechError:
            process.kill()
            process.wait()
            raise
        if status != b"R":
            process.wait()
            raise SpeechError(f"eSpeak NG cannot start: {payload.decode('utf-8', 'replace')}")
        self._process = process
        return process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the worker's loop ends at EOF
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_reply(stream: IO[bytes]) -> tuple[bytes, bytes]:
    head = stream.read(5)
    if len(head) != 5:
        raise SpeechError("the speech worker exited")
    (length,) = struct.unpack(">I", head[1:])
    payload = stream.read(length)
    if len(payload) != length:
        raise SpeechError("the speech worker exited mid-answer")
    return head[:1], payload
