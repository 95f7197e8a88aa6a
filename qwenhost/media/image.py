"""Image decoding with Pillow: decompression-bomb guard, EXIF orientation, alpha composited on white."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from qwenhost.media import errors
from qwenhost.media.decoded import Picture
from qwenhost.media.resize import ImageRule


def open_image(data: bytes, max_pixels: int, admit: Callable[[int, int], None] | None = None) -> Image.Image:
    """The decoded image in RGB at its original size; the size is checked before any pixel is decoded.

    ``admit(height, width)`` runs between the header and the pixels: it may refuse the image (a request's
    media may not outgrow its input limit). EXIF orientation may swap the sides after it; token counts
    do not depend on the order.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise errors.too_large()
            if admit is not None:
                admit(height, width)
            image.load()
            image = ImageOps.exif_transpose(image)
    except errors.MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.too_large() from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise errors.undecodable("image") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels become white, as qwen-vl-utils does, rather than whatever colour they hide.
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resized(image: Image.Image, height: int, width: int) -> Picture:
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return Picture(width, height, image.tobytes())


def load_picture(data: bytes, rule: ImageRule, max_pixels: int, admit: Callable[[int], None] | None = None) -> Picture:
    """Decode and smart-resize: the result is exactly what the projector sees (tokens = area / factor²).

    ``admit(tokens)`` hears the image's token count before its pixels are decoded and may refuse it.
    """

    def header(height: int, width: int) -> None:
        if admit is not None:
            admit(rule.tokens(height, width))

    image = open_image(data, max_pixels, header)
    height, width = rule.size(image.height, image.width)
    return resized(image, height, width)
