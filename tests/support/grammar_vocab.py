"""Grammar vocabularies for constrain/ tests: the embedded model's real one, and a tiny byte-level one
whose tool tags and think tags are single special tokens (as in Qwen2.5/Qwen3 vocabularies)."""

from __future__ import annotations

import ctypes
import warnings
from dataclasses import dataclass

import llama_cpp as L
import llguidance
from llguidance.llamacpp import lltokenizer_from_vocab

from qwenhost.config import embedded_model_path

_QUIET = L.llama_log_callback(lambda level, text, user: None)


@dataclass
class RealVocab:
    tokenizer: llguidance.LLTokenizer
    special_tokens: dict[str, int]
    end_tokens: frozenset[int]
    model: object  # keeps the llama_model (and so the vocabulary) alive

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.tokenize_str(text, parse_special=True))


def embedded_vocab() -> RealVocab:
    """The SmolLM2 vocabulary as the engine builds it, loaded without weights."""
    L.llama_log_set(_QUIET, ctypes.c_void_p(0))
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(embedded_model_path().encode(), params)
    vocab = L.llama_model_get_vocab(model)
    n = L.llama_vocab_n_tokens(vocab)
    eog = frozenset(t for t in range(n) if L.llama_vocab_is_eog(vocab, t))
    special: dict[str, int] = {}
    buf = ctypes.create_string_buffer(256)
    for t in range(n):
        if L.llama_vocab_get_attr(vocab, t) & (L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_USER_DEFINED):
            k = L.llama_token_to_piece(vocab, t, buf, 256, 0, True)
            special[buf.raw[:k].decode("utf-8", errors="replace")] = t
    with warnings.catch_warnings():  # llguidance still calls llama_token_get_attr, deprecated in llama-cpp-python
        warnings.simplefilter("ignore", DeprecationWarning)
        tokenizer = lltokenizer_from_vocab(vocab, n_vocab=n, eos_token=sorted(eog))
    return RealVocab(tokenizer, special, eog, model)


BYTE_SPECIALS = ("<|im_end|>", "<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_start|>")


class _ByteTokenizer:
    """Token i < 256 is byte i; then one token per special string (0xff-prefixed: llguidance's mark)."""

    def __init__(self) -> None:
        self.tokens = [bytes([i]) for i in range(256)] + [b"\xff" + s.encode() for s in BYTE_SPECIALS]
        self.eos_token_id = 256
        self.bos_token_id = None
        self.special_token_ids = list(range(256, 256 + len(BYTE_SPECIALS)))

    def __call__(self, text: str | bytes) -> list[int]:
        data = text.encode() if isinstance(text, str) else text
        return list(data)


@dataclass
class ByteVocab:
    tokenizer: llguidance.LLTokenizer
    special_tokens: dict[str, int]
    end_tokens: frozenset[int]

    def tokenize(self, text: str) -> list[int]:
        """Bytes, with every special string as its own token."""
        out: list[int] = []
        i = 0
        while i < len(text):
            for name, token in self.special_tokens.items():
                if text.startswith(name, i):
                    out.append(token)
                    i += len(name)
                    break
            else:
                out.extend(text[i].encode())
                i += 1
        return out


def byte_vocab() -> ByteVocab:
    tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()))
    special = {name: 256 + i for i, name in enumerate(BYTE_SPECIALS)}
    return ByteVocab(tokenizer, special, frozenset({256}))
