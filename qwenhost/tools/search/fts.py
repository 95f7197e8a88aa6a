"""Text -> FTS5: CJK bigram segmentation (unicode61 keeps a CJK run as one token, so `杭州` would never match)
and the query builder, which quotes every term so that user text can never become FTS5 syntax."""

from __future__ import annotations

import re

MAX_TERMS = 32  # a long question is cut to its first terms: a query stays cheap
_WORD = re.compile(r"\w+")
# CJK ideographs (incl. extension A and compatibility), kana and hangul: scripts written without spaces.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")


def bigrams(run: str) -> list[str]:
    return [run] if len(run) < 2 else [run[i : i + 2] for i in range(len(run) - 1)]


def segment(text: str) -> str:
    """The CJK runs of ``text`` as space-separated bigrams (the shadow column's content); other text dropped."""
    return " ".join(" ".join(bigrams(run)) for run in _CJK.findall(text))


def build_query(text: str) -> str | None:
    """An FTS5 MATCH expression that ORs every term of ``text``, each one quoted; None when there is none.
    A CJK run is matched by its bigrams (one character: as a prefix of the shadow column's bigrams)."""
    terms: list[str] = []
    for word in _WORD.findall(text):
        pos = 0
        for cjk in _CJK.finditer(word):
            terms += _plain(word[pos : cjk.start()])
            run = cjk.group()
            terms += [f'"{run}"*'] if len(run) == 1 else [f'"{b}"' for b in bigrams(run)]
            pos = cjk.end()
        terms += _plain(word[pos:])
    unique = list(dict.fromkeys(terms))[:MAX_TERMS]
    return " OR ".join(unique) if unique else None


def _plain(part: str) -> list[str]:
    # \w never holds a double quote; the replace keeps the quoting safe should that pattern ever change.
    return [f'"{part.replace(chr(34), chr(34) * 2)}"'] if part else []
