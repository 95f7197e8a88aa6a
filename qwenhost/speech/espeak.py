"""eSpeak NG through ctypes: the library and its data from the ``espeakng-loader`` wheel, so that speech
works after a plain ``pip install`` with no system package. Only the speech worker process imports this.

eSpeak NG keeps synthesis state in process globals between calls (the same sentence twice in one process
gives slightly different samples), so the worker synthesizes each sentence in a fresh fork of a process
that has loaded the library and never spoken: every sentence starts from the same state (deterministic).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
POS_CHARACTER = 1
BUFFER_MS = 500  # the callback's piece length: few Python calls per sentence

_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    pass


def library_paths() -> tuple[str, str]:
    """The shared library and the data directory shipped in the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise EspeakError("the espeakng-loader package is not installed (pip install espeakng-loader)") from exc
    return str(espeakng_loader.get_library_path()), str(espeakng_loader.get_data_path())


class Espeak:
    """One initialized library. synthesize() may be called once per process (see the module's docstring)."""

    def __init__(self, library: str, data: str) -> None:
        self._lib: Any = ctypes.CDLL(library)
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data.encode(), INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data}")
        self.sample_rate = int(rate)
        self._pieces: list[bytes] = []
        self._callback = _Callback(self._collect())  # kept referenced: the library calls it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self) -> Callable[[Any, int, Any], int]:
        def collect(wav: Any, num_samples: int, _events: Any) -> int:
            if num_samples > 0:
                self._pieces.append(ctypes.string_at(wav, num_samples * 2))
            return 0  # 0: go on

        return collect

    def synthesize(self, text: str, voice: str) -> bytes:
        """PCM16 mono at ``sample_rate`` for ``text`` spoken by the eSpeak voice ``voice`` (``en-us+f3``)."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"eSpeak NG has no voice {voice!r}")
        data = text.encode("utf-8")
        self._pieces.clear()
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0:
            raise EspeakError(f"espeak_Synth failed ({status})")
        return b"".join(self._pieces)
