"""An ``image`` input's rows (base64 PNG or JPEG, checked by the router) as
the arrays the model takes, decoded here, in the worker that serves it:
to the schema's channels, resized and cropped to its size, normalized, in
its layout. A file that does not decode (truncated, corrupt, a bomb whose
header lied) fails with ``InvalidImage`` naming it; the caller fails that
request alone."""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

import numpy as np

from turnout.core.errors import InvalidImage
from turnout.core.inputs import Image


def model_rows(schema: Any, rows: list[Any], where: str = "image inputs") -> list[Any]:
    """A request's rows as the model takes them: decoded for an image input,
    as they are for every other kind (the router made those ready)."""
    return decode_all(schema, rows, where) if isinstance(schema, Image) else rows


def decode_all(schema: Image, rows: list[str], where: str = "image inputs") -> list[Any]:
    """Every row of one request, as nested lists in the schema's layout."""
    return [decode(schema, row, f"{where}[{i}]").tolist() for i, row in enumerate(rows)]


def decode(schema: Image, b64: str, where: str) -> np.ndarray:
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    raw = base64.b64decode(b64)
    height, width = schema.size
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, past its own pixel limit: ours is the schema's.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(raw)) as image:
                w, h = image.size
                if w * h > schema.max_pixels:
                    raise InvalidImage(f"{where}: {w}x{h} pixels, more than the model's "
                                       f"{schema.max_pixels}")
                if image.format not in ("PNG", "JPEG"):
                    raise InvalidImage(f"{where}: a {image.format} image; the model takes PNG "
                                       "or JPEG")
                if image.format == "JPEG":
                    # Decode at a reduced scale where the target allows (much faster).
                    image.draft("L" if schema.channels == 1 else "RGB", (width, height))
                image.load()
                picture: Any = ImageOps.exif_transpose(image).convert(
                    "L" if schema.channels == 1 else "RGB")
    except InvalidImage:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise InvalidImage(f"{where}: the image decodes to too many pixels (a decompression "
                           "bomb)") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{where}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{where}: the image does not decode: {exc} (truncated or "
                           "corrupt?)") from None
    pixels: Any = np.asarray(_fit(picture, schema), dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    n = schema.normalize
    pixels = (pixels * n.scale - np.asarray(n.mean, np.float32)) / np.asarray(n.std, np.float32)
    if schema.layout == "chw":
        return pixels.transpose(2, 0, 1)
    if schema.layout == "flat":
        return pixels.reshape(-1)
    return pixels


def _fit(image: Any, schema: Image) -> Any:
    from PIL import Image as PILImage

    height, width = schema.size
    if image.size == (width, height):
        return image
    if schema.resize == "stretch":
        return image.resize((width, height), PILImage.Resampling.BILINEAR)
    if schema.resize == "shorter":
        w, h = image.size
        scale = max(width / w, height / h)
        image = image.resize((max(width, round(w * scale)), max(height, round(h * scale))),
                             PILImage.Resampling.BILINEAR)
    w, h = image.size
    if schema.crop == "center":
        left, top = (w - width) // 2, (h - height) // 2
        return image.crop((left, top, left + width, top + height))
    return image.crop((0, 0, width, height))
