"""The multimodal prompt: the chat template's text with media laid out in place (spec §6.4).

Each media part is rendered as a private-use sentinel inside its message's text, so any ChatML
template places it (and user text that happens to spell ``<|image_pad|>`` cannot move it). The
rendered text is cut at the sentinels and its text runs tokenized before any media is fetched (the
input-length check needs only them); each media part then becomes its placeholder tokens around the
encoder cells, in the family's layout (Qwen3-VL: one "<t seconds>"-stamped image per frame pair).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import MediaPart, Message, TextPart
from qwenhost.engine.protocol import AudioInput, MediaSpan, PromptPiece, VisualInput
from qwenhost.formats.vision import PLACEHOLDERS, VisionFamily, vision_family
from qwenhost.media.decoded import Picture, digest
from qwenhost.service.media import DecodedPart
from qwenhost.service.models import ServedModel

_SENTINEL = "\ue000qwenhost-media-{}\ue001"
_SPLIT = re.compile("\ue000qwenhost-media-(\\d+)\ue001")
_KINDS = {"image": "image", "video": "video", "video_frames": "video", "audio": "audio"}


@dataclass(frozen=True, slots=True)
class MediaText:
    """A rendered prompt cut at its media sentinels: tokenized text runs and media indices, in order."""

    pieces: tuple[tuple[int, ...] | int, ...]
    first_media_char: int  # where the first sentinel stood in the text (cache markers after it: unpinned)

    @property
    def num_text_tokens(self) -> int:
        return sum(len(p) for p in self.pieces if isinstance(p, tuple))

    @property
    def leading_tokens(self) -> tuple[int, ...]:
        """The tokens before the first media part."""
        first = self.pieces[0] if self.pieces else ()
        return first if isinstance(first, tuple) else ()


def split_media(text: str, tokenize: Callable[[str], list[int]], num_media: int) -> MediaText:
    """Cut ``text`` at its sentinels and tokenize the text between them; each of the request's
    ``num_media`` parts must appear exactly once, in order of first appearance."""
    pieces: list[tuple[int, ...] | int] = []
    used: set[int] = set()
    pos = 0
    first = len(text)
    for match in _SPLIT.finditer(text):
        if text[pos : match.start()]:
            pieces.append(tuple(tokenize(text[pos : match.start()])))
        index = int(match.group(1))
        if index >= num_media or index in used:
            raise InvalidParameter("the chat template repeated or reordered a media part")
        used.add(index)
        first = min(first, match.start())
        pieces.append(index)
        pos = match.end()
    if text[pos:]:
        pieces.append(tuple(tokenize(text[pos:])))
    if len(used) != num_media:
        raise InvalidParameter("the chat template dropped a media part (media is accepted in user messages)")
    return MediaText(tuple(pieces), first)


@dataclass(frozen=True, slots=True)
class MediaPrompt:
    tokens: tuple[int, ...]
    media: tuple[MediaSpan, ...]
    modal_tokens: dict[str, int]  # image/video/audio cells plus their placeholder tokens (spec §2.2)


def with_sentinels(messages: Sequence[Message]) -> tuple[Message, ...]:
    """The messages with every media part replaced by a numbered sentinel text part."""
    out = []
    n = 0
    for m in messages:
        if not isinstance(m.content, tuple) or not m.media:
            out.append(m)
            continue
        content = []
        for p in m.content:
            if isinstance(p, MediaPart):
                content.append(TextPart(_SENTINEL.format(n)))
                n += 1
            else:
                content.append(p)
        out.append(replace(m, content=tuple(content)))
    return tuple(out)


class MediaPromptBuilder:
    def __init__(self, model: ServedModel) -> None:
        self.model = model
        caps = model.backend.info.media
        assert caps is not None
        self.family: VisionFamily = vision_family(caps.vision_projector or "")
        vocabulary = set(model.backend.info.special_tokens)
        self.vision = [self._tokens(t) for t in PLACEHOLDERS.pick(PLACEHOLDERS.vision, vocabulary)]
        self.audio = [self._tokens(t) for t in PLACEHOLDERS.pick(PLACEHOLDERS.audio, vocabulary)]

    def _tokens(self, text: str) -> tuple[int, ...]:
        return tuple(self.model.backend.tokenizer.tokenize(text, add_special=False, parse_special=True))

    def build(self, text: MediaText, decoded: Sequence[DecodedPart]) -> MediaPrompt:
        pieces: list[PromptPiece] = []
        kinds: list[str | None] = []  # per piece: the modality it counts toward (None: text)
        for run in text.pieces:
            if isinstance(run, tuple):
                pieces.append(run)
                kinds.append(None)
            else:
                self._media(decoded[run], pieces, kinds)
        built = self.model.backend.build_prompt(pieces)
        counts: dict[str, int] = {}
        media_cells = iter(built.piece_tokens)
        for piece, kind in zip(pieces, kinds, strict=True):
            size = len(piece) if isinstance(piece, tuple) else next(media_cells)
            if kind is not None:
                counts[kind] = counts.get(kind, 0) + size
        return MediaPrompt(built.tokens, built.media, counts)

    def _text(self, text: str, pieces: list[PromptPiece], kinds: list[str | None]) -> None:
        if text:
            pieces.append(self._tokens(text))
            kinds.append(None)

    def _wrapped(
        self,
        kind: str,
        wrap: list[tuple[int, ...]],
        item: PromptPiece,
        pieces: list[PromptPiece],
        kinds: list[str | None],
    ) -> None:
        pieces += [wrap[0], item, wrap[1]]
        kinds += [kind, kind, kind]

    def _media(self, part: DecodedPart, pieces: list[PromptPiece], kinds: list[str | None]) -> None:
        kind = _KINDS[part.kind]
        if part.clip is not None:
            clip = AudioInput(part.clip.pcm, digest(part.clip.pcm))
            self._wrapped(kind, self.audio, clip, pieces, kinds)
            return
        if part.kind == "image":
            self._wrapped(kind, self.vision, _visual(part.pictures, (0,)), pieces, kinds)
        elif self.family.video_time == "timestamps":
            # Qwen3-VL: "<t seconds>" then an image per frame pair, t the pair's mean time (HF processor).
            for k in range(0, len(part.pictures), 2):
                stamp = (part.timestamps[k] + part.timestamps[k + 1]) / 2
                self._text(f"<{stamp:.1f} seconds>", pieces, kinds)
                self._wrapped(kind, self.vision, _visual(part.pictures[k : k + 2], (0,)), pieces, kinds)
        else:
            pairs = len(part.pictures) // 2
            if self.family.video_time == "index":
                temporal = tuple(range(pairs))
            else:  # seconds: pair index x seconds per pair (2 frames / fps) x positions per second
                temporal = tuple(int(k * (2 / part.fps) * self.family.tokens_per_second) for k in range(pairs))
            self._wrapped(kind, self.vision, _visual(part.pictures, temporal), pieces, kinds)


def _visual(pictures: Sequence[Picture], temporal: tuple[int, ...]) -> VisualInput:
    first = pictures[0]
    frames = tuple(p.rgb for p in pictures)
    return VisualInput(
        first.width,
        first.height,
        frames,
        digest(str((first.width, first.height)).encode(), *frames),
        temporal,
    )
