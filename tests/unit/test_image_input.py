"""The image input kind without a server: the router's checks (base64, the
type from the first bytes, width and height from the header, the pixel
limit) and the worker's decoding (Pillow: channels, resize, crop,
normalize, layout), each refusal naming the image."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image as PILImage

from turnout.core.errors import InvalidImage, InvalidInput, PayloadTooLarge
from turnout.core.inputs import Image, parse_schema
from turnout.core.inputs.image import png, sniff
from turnout.ml.images import decode, model_rows


def _file(width: int, height: int, kind: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    out = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(out, format=kind)
    return out.getvalue()


@pytest.mark.parametrize(("kind", "width", "height"), [("PNG", 31, 17), ("JPEG", 640, 480)])
def test_the_header_gives_type_and_size_without_decoding(kind: str, width: int, height: int) -> None:
    assert sniff("x", _file(width, height, kind)) == (kind.lower(), width, height)


@pytest.mark.parametrize(("data", "said"), [
    (b"GIF89a....", "a GIF file; the model takes PNG or JPEG"),
    (b"hello, I am text", "not a PNG or JPEG file"),
    (b"\x89PNG\r\n\x1a\n\x00", "a PNG with no header (IHDR)"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG with no frame header"),
])
def test_what_is_not_a_png_or_jpeg_is_named(data: bytes, said: str) -> None:
    with pytest.raises(InvalidInput) as err:
        sniff("image inputs[0]", data)
    assert str(err.value).startswith("image inputs[0]: ") and said in str(err.value)


def test_rows_are_checked_and_stay_base64() -> None:
    schema = Image(size=(8, 8), channels=1, max_pixels=1000)
    text = base64.b64encode(_file(20, 20, "PNG", "L")).decode()
    assert schema.rows("m", [{"b64": text}]) == [text]
    with pytest.raises(InvalidInput, match="image inputs\\[1\\]: b64 is not valid base64"):
        schema.rows("m", [{"b64": text}, {"b64": "%%%"}])
    with pytest.raises(InvalidInput, match='image inputs\\[0\\]: expected {"b64"'):
        schema.rows("m", ["just a string"])
    with pytest.raises(PayloadTooLarge, match="40x40 is 1600 pixels, more than the model's 1000"):
        schema.rows("m", [{"b64": base64.b64encode(_file(40, 40, "PNG", "L")).decode()}])
    exact = Image(size=(8, 8), channels=1, resize="none")
    with pytest.raises(InvalidInput, match="20x20, but model takes exactly 8x8"):
        exact.rows("m", [{"b64": text}])


def test_the_schema_is_checked_when_the_table_loads() -> None:
    with pytest.raises(ValueError, match="normalize.mean: one value, or one per channel"):
        parse_schema({"kind": "image", "size": [8, 8], "channels": 3,
                      "normalize": {"mean": [0.5, 0.5]}})
    assert parse_schema({"kind": "image", "size": [224, 224]}).summary() == "image 224x224x3"


def test_the_warm_up_image_is_a_real_png_of_the_size() -> None:
    schema = Image(size=(5, 7), channels=3)
    (row,) = schema.warm_up()
    assert sniff("w", base64.b64decode(row)) == ("png", 7, 5)
    assert PILImage.open(io.BytesIO(png(7, 5, 1))).size == (7, 5)
    assert decode(schema, row, "w").shape == (3, 5, 7)


def test_decoding_converts_resizes_crops_and_normalizes() -> None:
    raw = _file(64, 32, "PNG")
    text = base64.b64encode(raw).decode()
    pixels = np.asarray(PILImage.open(io.BytesIO(raw)), np.float32)
    # The shorter side to 16, then the centre 16x16, in torchvision's layout.
    shorter = Image(size=(16, 16), channels=3, normalize={"mean": [0.5], "std": [0.25]})
    got = decode(shorter, text, "x")
    resized = PILImage.open(io.BytesIO(raw)).resize((32, 16), PILImage.Resampling.BILINEAR)
    want = (np.asarray(resized, np.float32)[:, 8:24] / 255 - 0.5) / 0.25
    np.testing.assert_allclose(got, want.transpose(2, 0, 1), atol=1e-5)
    grey = Image(size=(32, 64), channels=1, layout="flat", normalize={"scale": 1.0})
    flat = decode(grey, text, "x")
    assert flat.shape == (32 * 64,)
    np.testing.assert_allclose(
        flat, np.asarray(PILImage.fromarray(pixels.astype(np.uint8)).convert("L"), np.float32).ravel())
    assert model_rows(Image(size=(4, 4), layout="hwc"), [text])[0] == \
        decode(Image(size=(4, 4), layout="hwc"), text, "image inputs[0]").tolist()


def test_a_file_that_does_not_decode_is_named() -> None:
    raw = _file(32, 32, "PNG")
    cut = base64.b64encode(raw[: len(raw) // 2]).decode()
    with pytest.raises(InvalidImage, match="image inputs\\[3\\]: the image does not decode"):
        decode(Image(size=(8, 8)), cut, "image inputs[3]")
    big = base64.b64encode(_file(50, 50, "PNG")).decode()
    with pytest.raises(InvalidImage, match="50x50 pixels, more than the model's 100"):
        decode(Image(size=(8, 8), max_pixels=100), big, "image inputs[0]")
