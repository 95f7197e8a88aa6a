"""Finding a family: by name (a model's ``family = "..."`` config) or from a GGUF's metadata and template."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from qwenhost.formats.base import ModelFormat, Signature
from qwenhost.formats.families import ALL, CHATML, DETECTION_ORDER

FORMATS: dict[str, ModelFormat] = {f.name: f for f in ALL}


def get_format(name: str) -> ModelFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def _matches(sig: Signature, arch: str, template: str | None, special_tokens: Collection[str]) -> bool:
    if sig.architectures and arch not in sig.architectures:
        return False
    if sig.special_tokens:
        # Vocabulary clues stand in for a missing template only: a template says more than a vocabulary.
        return template is None and all(t in special_tokens for t in sig.special_tokens)
    if sig.template_has and (template is None or not all(s in template for s in sig.template_has)):
        return False
    return not (template is not None and any(s in template for s in sig.template_lacks))


def detect_format(
    metadata: Mapping[str, str], template: str | None, special_tokens: Collection[str] = ()
) -> ModelFormat:
    """The family of a GGUF from its architecture, the chat template in use and its special tokens."""
    arch = metadata.get("general.architecture", "")
    for fmt in DETECTION_ORDER:
        if any(_matches(sig, arch, template, special_tokens) for sig in fmt.signature):
            return fmt
    return CHATML
