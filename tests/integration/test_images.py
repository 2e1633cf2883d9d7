"""Image inputs end to end: the digits CNN (trained at the test session's
start on scikit-learn's 8x8 digits, ``models_dir``) served as an image
model; PNG and JPEG of those digits sent as base64 JSON, as a raw body, as
multipart files and as v2 BYTES (tritonclient, binary), each answered with
the CNN's own predictions on the same pixels, decoded in the worker; a
decompression bomb, a truncated file and a text file named as an image
refused with the reason, and the worker goes on."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import start_redis
from tests.support.procs import Cluster, wait_for

pytestmark = pytest.mark.integration

ROUTES = """\
models:
  digits-image:
    framework: torch
    version: 1
    artifact: digits-cnn/1
    queue: cpu
    # The CNN takes the 64 pixels of an 8x8 digit as 0..16, flat.
    input: {kind: image, size: [8, 8], channels: 1, resize: stretch, layout: flat,
            normalize: {scale: 0.0627450980392157}}
    max_batch: 32
    max_delay_ms: 2
"""


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[:12], digits.target[:12]


def _encode(pixels: np.ndarray, kind: str, size: int = 8) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), "L")
    if size != 8:
        image = image.resize((size, size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format=kind, **({"quality": 95} if kind == "JPEG" else {}))
    return out.getvalue()


def _bomb(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, of a few bytes: its IDAT is
    zeros that would inflate to every pixel."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100_000)) + chunk(b"IEND", b""))


class Served:
    def __init__(self, http: httpx.Client, url: str, models_dir: Path) -> None:
        self.http = http
        self.url = url
        import yaml

        from turnout.core.routes.loading import parse_routes
        from turnout.ml.adapters.torch import TorchAdapter
        from turnout.ml.artifacts import read_meta

        route = parse_routes(yaml.safe_load(ROUTES)).routes["digits-image"]
        folder, meta = read_meta(models_dir, route)
        self.cnn = TorchAdapter().load(folder / meta.artifact, meta, "cpu", {})

    def expected(self, files: list[bytes]) -> tuple[list[Any], list[list[float]]]:
        """The CNN's own answer on the pixels these files decode to."""
        from PIL import Image

        rows = [(np.asarray(Image.open(io.BytesIO(f)).convert("L"), np.float32)
                 * np.float32(0.0627450980392157)).reshape(-1).tolist() for f in files]
        answer = self.cnn.predict(rows)
        return answer.predictions, answer.probabilities


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("images")
    (tmp / "routes.yaml").write_text(ROUTES)
    server = start_redis(tmp / "redis")
    cluster = Cluster(server.settings, models_dir, tmp / "routes.yaml", tmp)
    try:
        cluster.worker("cpu", "cpu@images", "--concurrency", "1")
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=60) as http:
            wait_for(lambda: http.get("/v1/models").json()["models"][0]["available"], 60,
                     "the image model to serve")
            yield Served(http, url, models_dir)
    finally:
        cluster.stop()
        server.stop()


def _answer(r: httpx.Response) -> tuple[list[Any], list[list[float]]]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCESS", body
    return body["predictions"], body["probabilities"]


def _same(got: tuple[list[Any], list[list[float]]], want: tuple[list[Any], list[list[float]]]) -> None:
    assert got[0] == want[0]
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_base64_in_json(served: Served, kind: str) -> None:
    images, labels = _digits()
    files = [_encode(x, kind) for x in images]
    r = served.http.post("/v1/models/digits-image/predict", json={
        "inputs": [{"b64": base64.b64encode(f).decode()} for f in files], "wait": 30})
    got = _answer(r)
    _same(got, served.expected(files))
    if kind == "PNG":  # lossless: the CNN's accuracy on these digits holds
        assert np.mean(np.asarray(got[0]) == labels) >= 0.9


@pytest.mark.parametrize(("kind", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_a_raw_image_body(served: Served, kind: str, mime: str) -> None:
    image = _encode(_digits()[0][3], kind)
    r = served.http.post("/v1/models/digits-image/predict?wait=30", content=image,
                         headers={"content-type": mime})
    _same(_answer(r), served.expected([image]))


def test_multipart_files(served: Served) -> None:
    files = [_encode(x, "PNG") for x in _digits()[0][:4]]
    r = served.http.post("/v1/models/digits-image/predict",
                         files=[("image", (f"d{i}.png", f, "image/png")) for i, f in enumerate(files)],
                         data={"wait": "30"})
    _same(_answer(r), served.expected(files))


def test_a_larger_image_is_resized_in_the_worker(served: Served) -> None:
    pixels = _digits()[0][5]
    big = _encode(pixels, "PNG", size=64)  # each pixel a 8x8 block
    r = served.http.post("/v1/models/digits-image/predict?wait=30", content=big,
                         headers={"content-type": "image/png"})
    got = _answer(r)
    from PIL import Image

    shrunk = Image.open(io.BytesIO(big)).convert("L").resize((8, 8), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    shrunk.save(out, format="PNG")
    _same(got, served.expected([out.getvalue()]))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "base64"])
def test_v2_bytes(served: Served, binary: bool) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    files = [_encode(x, "PNG") for x in _digits()[0][:3]]
    if binary:
        client = httpclient.InferenceServerClient(served.url.removeprefix("http://"))
        try:
            assert client.get_model_metadata("digits-image")["inputs"] == [
                {"name": "image", "datatype": "BYTES", "shape": [-1]}]
            sent = httpclient.InferInput("image", [len(files)], "BYTES")
            sent.set_data_from_numpy(np.asarray(files, dtype=np.object_), binary_data=True)
            result = client.infer("digits-image", [sent])
            got = ([x.decode() if isinstance(x, bytes) else int(x)
                    for x in result.as_numpy("predictions")],
                   result.as_numpy("probabilities").tolist())
        finally:
            client.close()
    else:
        r = served.http.post("/v2/models/digits-image/infer", json={"inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [len(files)],
             "data": [base64.b64encode(f).decode() for f in files]}]})
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}
        got = (out["predictions"]["data"],
               np.asarray(out["probabilities"]["data"]).reshape(len(files), -1).tolist())
    want = served.expected(files)
    assert [int(x) for x in got[0]] == [int(x) for x in want[0]]
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


@pytest.mark.parametrize(("body", "mime", "status", "said"), [
    (_bomb(30_000, 30_000), "image/png", 413, "30000x30000 is 900000000 pixels"),
    (b"this is a text file, not an image\n", "image/png", 422, "not a PNG or JPEG file"),
    (b"GIF89a" + b"\x00" * 20, "image/png", 422, "a GIF file; the model takes PNG or JPEG"),
])
def test_bad_images_are_refused_at_the_router(served: Served, body: bytes, mime: str,
                                              status: int, said: str) -> None:
    r = served.http.post("/v1/models/digits-image/predict?wait=30", content=body,
                         headers={"content-type": mime})
    assert r.status_code == status, r.text
    assert "image inputs[0]" in r.json()["detail"] and said in r.json()["detail"]


def test_a_truncated_image_fails_alone_in_the_worker_which_goes_on(served: Served) -> None:
    good = [_encode(x, "PNG") for x in _digits()[0][:2]]
    cut = _encode(_digits()[0][7], "PNG")
    cut = cut[: len(cut) - 30]  # its IDAT cut short: only decoding finds it
    r = served.http.post("/v1/models/digits-image/predict?wait=30", content=cut,
                         headers={"content-type": "image/png"})
    assert r.status_code == 422, r.text
    assert r.headers["x-turnout-error"] == "InvalidImage"
    assert "image inputs[0]" in r.json()["detail"] and "does not decode" in r.json()["detail"]
    # Sent together, the bad one fails its own request and the others run.
    r = served.http.post("/v1/models/digits-image/predict", json={
        "inputs": [{"b64": base64.b64encode(f).decode()} for f in good], "wait": 30})
    _same(_answer(r), served.expected(good))


def test_bad_json_rows_and_multipart_are_named(served: Served) -> None:
    r = served.http.post("/v1/models/digits-image/predict",
                         json={"inputs": [{"b64": "not base64!"}], "wait": 5})
    assert r.status_code == 422 and "image inputs[0]: b64 is not valid base64" in r.json()["detail"]
    r = served.http.post("/v1/models/digits-image/predict", json={"inputs": [[1, 2]], "wait": 5})
    assert r.status_code == 422 and 'expected {"b64"' in r.json()["detail"]
    form = (b'--b\r\nContent-Disposition: form-data; name="wait"\r\n\r\n5\r\n--b--\r\n')
    r = served.http.post("/v1/models/digits-image/predict", content=form,
                         headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 422 and "holds no file" in r.json()["detail"]
