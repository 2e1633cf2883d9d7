"""``image``: a row is one image, PNG or JPEG, as ``{"b64": "..."}`` in JSON
(a raw ``image/png`` or ``image/jpeg`` body, a multipart file or an Open
Inference Protocol BYTES element becomes the same). The schema says what the
model takes: its ``size`` (height, width), ``channels`` (1 grey, 3 RGB), how
an image of another size gets there (``resize``), ``normalize`` and the
``layout`` of the array.

The router never decodes pixels: it checks the base64, the file's type from
its first bytes, and its width and height from its header, so that a wrong
type or an image of too many pixels (a decompression bomb's header says so)
is refused before it is queued. The worker that serves the model decodes it
(``turnout.ml.images``), where a truncated or corrupt file fails its own
request alone.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from turnout.core.errors import InvalidInput, PayloadTooLarge
from turnout.core.inputs.base import InputKind, show
from turnout.core.oip import Spec, Tensor
from turnout.core.strict import StrictModel

# Magic numbers of the types taken, and of some often sent instead (named
# in the refusal).
_PNG = b"\x89PNG\r\n\x1a\n"
_KNOWN = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"RIFF", "WebP or another RIFF file"),
          (b"%PDF", "PDF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


class Normalize(StrictModel):
    """``(pixel * scale - mean) / std``, per channel (one value for all, or
    one per channel); pixels start at 0..255."""

    scale: float = Field(default=1 / 255, gt=0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @model_validator(mode="after")
    def _positive(self) -> Normalize:
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be above 0")
        return self


class Image(InputKind):
    name: ClassVar[str] = "image"

    kind: Literal["image"] = "image"
    # (height, width) the model takes.
    size: tuple[int, int]
    channels: Literal[1, 3] = 3
    # stretch: to size, ignoring the aspect; shorter: the shorter side to the
    # size, then the crop; none: the image must be the size already.
    resize: Literal["stretch", "shorter", "none"] = "shorter"
    crop: Literal["center", "none"] = "center"
    normalize: Normalize = Normalize()
    # chw: [channels, height, width] (torchvision); hwc; flat: one list of
    # height x width x channels numbers (a model that takes a flat row).
    layout: Literal["chw", "hwc", "flat"] = "chw"
    max_pixels: int = Field(default=40_000_000, ge=1)
    max_bytes: int = Field(default=20_000_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Image:
        if any(d < 1 or d > 16_384 for d in self.size):
            raise ValueError(f"size is (height, width), each 1 to 16384, got {list(self.size)}")
        for name in ("mean", "std"):
            if len(getattr(self.normalize, name)) not in (1, self.channels):
                raise ValueError(f"normalize.{name}: one value, or one per channel "
                                 f"({self.channels})")
        return self

    def rows(self, model: str, inputs: list[Any]) -> list[str]:
        out = []
        for i, row in enumerate(inputs):
            where = f"image inputs[{i}]"
            if not isinstance(row, dict) or set(row) != {"b64"} or not isinstance(row["b64"], str):
                raise InvalidInput(f"{where}: expected {{\"b64\": \"<base64 PNG or JPEG>\"}}, "
                                   f"got {show(row)}")
            raw = decode_b64(where, row["b64"])
            self.check(where, raw)
            out.append(row["b64"])
        return out

    def check(self, where: str, raw: bytes) -> tuple[str, int, int]:
        """The file's type and size from its first bytes and its header:
        refused when it is neither PNG nor JPEG, too large, or holds more
        pixels than ``max_pixels``. Decodes nothing."""
        if len(raw) > self.max_bytes:
            raise PayloadTooLarge(f"{where}: {len(raw)} bytes, more than the model's "
                                  f"{self.max_bytes}")
        kind, width, height = sniff(where, raw)
        if width * height > self.max_pixels:
            raise PayloadTooLarge(f"{where}: {width}x{height} is {width * height} pixels, more "
                                  f"than the model's {self.max_pixels} (a decompression bomb?)")
        if self.resize == "none" and (height, width) != tuple(self.size):
            raise InvalidInput(f"{where}: {width}x{height}, but model takes exactly "
                               f"{self.size[1]}x{self.size[0]} (resize: none)")
        return kind, width, height

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def summary(self) -> str:
        return f"image {self.size[0]}x{self.size[1]}x{self.channels}"

    def warm_up(self) -> list[Any]:
        height, width = self.size
        return [base64.b64encode(png(width, height, self.channels)).decode()]

    def v2_inputs(self) -> list[Spec]:
        return [Spec("image", "BYTES", (-1,))]

    def from_v2(self, tensors: dict[str, Tensor]) -> list[Any]:
        # A binary BYTES element is the file itself; a JSON one, its base64.
        return [{"b64": x if isinstance(x, str) else base64.b64encode(x).decode()}
                for x in tensors["image"].data]


def decode_b64(where: str, text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: b64 is not valid base64") from None
    if not raw:
        raise InvalidInput(f"{where}: the image is empty")
    return raw


def sniff(where: str, raw: bytes) -> tuple[str, int, int]:
    """(type, width, height) from a PNG's or a JPEG's header."""
    if raw.startswith(_PNG):
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            raise InvalidInput(f"{where}: a PNG with no header (IHDR): truncated or corrupt")
        width, height = struct.unpack(">II", raw[16:24])
        return "png", width, height
    if raw.startswith(b"\xff\xd8"):
        return ("jpeg", *_jpeg_size(where, raw))
    for magic, name in _KNOWN:
        if raw.startswith(magic):
            raise InvalidInput(f"{where}: a {name} file; the model takes PNG or JPEG")
    raise InvalidInput(f"{where}: not a PNG or JPEG file (it starts {raw[:8]!r})")


def _jpeg_size(where: str, raw: bytes) -> tuple[int, int]:
    """Walk a JPEG's markers to its frame header (SOFn)."""
    at = 2
    while at + 4 <= len(raw):
        if raw[at] != 0xFF:
            raise InvalidInput(f"{where}: a JPEG whose markers are corrupt")
        marker = raw[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        (length,) = struct.unpack(">H", raw[at + 2:at + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF):
            if at + 9 > len(raw):
                break
            height, width = struct.unpack(">HH", raw[at + 5:at + 9])
            return width, height
        at += 2 + length
    raise InvalidInput(f"{where}: a JPEG with no frame header: truncated or corrupt")


def png(width: int, height: int, channels: int) -> bytes:
    """A black PNG of this size (the warm-up image), written by hand."""
    color = {1: 0, 3: 2}[channels]
    line = b"\x00" + b"\x00" * (width * channels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return _PNG + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(line * height)) \
        + chunk(b"IEND", b"")
