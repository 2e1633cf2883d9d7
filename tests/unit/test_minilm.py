"""minilm's adapter gives the vectors sentence-transformers gives, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from turnout.core.routes import load_routes
from turnout.ml.adapters import get_adapter
from turnout.ml.artifacts import verify

REPO = Path(__file__).resolve().parents[2]

TEXTS = [
    "Turnout routes jobs to the right queue.",
    "A railway switch sends a train onto the right track. " * 30,  # past 256 tokens
    "émigré café naïve — 東京",
    "x",
]


@pytest.fixture(scope="module")
def route():  # type: ignore[no-untyped-def]
    return load_routes(REPO / "configs" / "routes.yaml").routes["minilm"]


def test_vectors_equal_sentence_transformers(models_dir: Path, route, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # No network here, and none needed: the hub is off for both.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path, meta = verify(models_dir, route)
    ours = get_adapter(route.framework).load(path, meta, "cpu", route.options)
    got = np.asarray(ours.predict(TEXTS).predictions)
    reference = SentenceTransformer(str(path.parent), device="cpu").encode(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Batched and one at a time agree: padding does not leak into the mean.
    alone = np.asarray([ours.predict([t]).predictions[0] for t in TEXTS])
    np.testing.assert_allclose(alone, got, atol=1e-5)


def test_a_tampered_tokenizer_is_refused(models_dir: Path, route, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from turnout.core.errors import ArtifactError

    copy = tmp_path / "models"
    shutil.copytree(models_dir / "minilm", copy / "minilm")
    with (copy / "minilm" / "1" / "vocab.txt").open("a") as fh:
        fh.write("[EVIL]\n")
    with pytest.raises(ArtifactError, match="vocab.txt has sha256"):
        verify(copy, route)
