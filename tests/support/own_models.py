"""Models of every format `turnout models add` takes, made on the fly from
data that ships with scikit-learn or that is generated (nothing downloaded),
each with its own in-process predictions to compare the served ones with."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
PEOPLE = [{"age": 31, "income": 52.5, "city": "Paris"},
          {"age": 64, "income": 38.0, "city": "Nice"},
          {"age": 22, "income": 71.25, "city": "Lyon"}]


@dataclass
class Made:
    """A model file or folder, how to add it, rows to send, and what the
    model itself answers for them (probabilities, or predictions)."""

    path: Path
    rows: list[Any]
    expected: list[Any]
    args: list[str] = field(default_factory=list)
    # "probabilities" or "predictions": which part of the answer to compare.
    compare: str = "probabilities"
    format: str = ""
    # What of each answered row to compare (all of it by default).
    pick: Callable[[Any], Any] | None = None


def _people_frame(n: int = 300) -> tuple[Any, Any]:
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 80, n), "income": rng.normal(50, 12, n),
                       "city": rng.choice(["Paris", "Lyon", "Nice"], n)})
    y = ((df.income > 50) ^ (df.city == "Nice")).astype(int)
    return df, y


def _people_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df, y = _people_frame()
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    columns = ColumnTransformer([("num", numeric, ["age", "income"]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    return Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(df, y)


def _people_proba(pipe: Any, rows: list[dict[str, Any]]) -> list[Any]:
    import pandas as pd

    frame = pd.DataFrame(rows).astype({"age": "float64", "income": "float64"})
    return pipe.predict_proba(frame).tolist()


def skops_pipeline(folder: Path) -> Made:
    import skops.io as sio

    pipe = _people_pipeline()
    path = folder / "people.skops"
    sio.dump(pipe, path)
    trust = [a for t in sio.get_untrusted_types(file=path) for a in ("--trust-type", t)]
    return Made(path, PEOPLE, _people_proba(pipe, PEOPLE), trust, format="skops")


def joblib_pipeline(folder: Path) -> Made:
    import joblib

    pipe = _people_pipeline()
    path = folder / "people.joblib"
    joblib.dump(pipe, path)
    return Made(path, PEOPLE, _people_proba(pipe, PEOPLE), ["--trust-pickle"], format="joblib")


def xgboost_iris(folder: Path) -> Made:
    import xgboost as xgb
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
                        xgb.DMatrix(x, y), 8)
    path = folder / "iris-xgb.json"
    booster.save_model(path)
    expected = booster.predict(xgb.DMatrix(np.asarray(IRIS_ROWS, dtype=np.float32))).tolist()
    return Made(path, IRIS_ROWS, expected, format="xgboost")


def lightgbm_iris(folder: Path) -> Made:
    import lightgbm as lgb
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1,
                         "min_data_in_leaf": 5}, lgb.Dataset(x, y), 8)
    path = folder / "iris-lgb.txt"
    booster.save_model(str(path))
    expected = booster.predict(np.asarray(IRIS_ROWS, dtype=np.float32)).tolist()
    return Made(path, IRIS_ROWS, expected, format="lightgbm")


def onnx_graph(folder: Path) -> Made:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Softmax", ["z"], ["scores"], axis=1)],
        "iris-linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "linear.onnx"
    onnx.save(model, path)
    z = np.asarray(IRIS_ROWS, dtype=np.float32) @ w + b
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return Made(path, IRIS_ROWS, (e / e.sum(axis=1, keepdims=True)).tolist(),
                compare="predictions", format="onnx")


def _net() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 3)).eval()


def _net_out(net: Any) -> list[Any]:
    import torch

    with torch.inference_mode():
        out: list[Any] = net(torch.tensor(IRIS_ROWS, dtype=torch.float32)).tolist()
    return out


def torchscript_net(folder: Path) -> Made:
    import torch

    net = _net()
    path = folder / "net.pt"
    torch.jit.script(net).save(str(path))
    sample = folder / "net-sample.json"
    sample.write_text(json.dumps({"inputs": IRIS_ROWS[:1]}))
    return Made(path, IRIS_ROWS, _net_out(net), ["--sample", str(sample)],
                compare="predictions", format="torchscript")


def exported_net(folder: Path) -> Made:
    import torch

    net = _net()
    program = torch.export.export(net, (torch.zeros(2, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = folder / "net.pt2"
    torch.export.save(program, path)
    return Made(path, IRIS_ROWS, _net_out(net), compare="predictions", format="torch-export")


TEXTS = ["a good movie", "a bad movie", "good good bad"]


WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "good", "bad", "movie", "the", "plot"]


def _tiny_bert(folder: Path, name: str, head: str, labels: list[str]) -> tuple[Path, Any, Any]:
    """A one-layer BERT with a word-level tokenizer made here, saved with
    save_pretrained (safetensors): nothing is downloaded."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordPiece({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", model_max_length=64)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
        id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    model = getattr(transformers, head)(config).eval()
    path = folder / name
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path, tokenizer, model


def hf_classifier(folder: Path) -> Made:
    import torch

    path, tokenizer, model = _tiny_bert(folder, "tiny-bert", "BertForSequenceClassification",
                                        ["negative", "positive"])
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = torch.softmax(model(**enc).logits, dim=-1).tolist()
    return Made(path, TEXTS, expected, format="huggingface")


def hf_image_classifier(folder: Path) -> Made:
    """A one-layer ViT on 16x16 images with its image processor, saved with
    save_pretrained; the expected answer from Hugging Face's own processor."""
    import base64
    import io

    import torch
    import transformers
    from PIL import Image

    labels = ["cat", "dog", "bird"]
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, id2label=dict(enumerate(labels)),
        label2id={x: i for i, x in enumerate(labels)})
    model = transformers.ViTForImageClassification(config).eval()
    processor = transformers.ViTImageProcessor(size={"height": 16, "width": 16},
                                               image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    path = folder / "tiny-vit"
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    rng = np.random.default_rng(3)
    images, rows = [], []
    for _ in range(3):
        image = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "RGB")
        out = io.BytesIO()
        image.save(out, format="PNG")
        images.append(image)
        rows.append({"b64": base64.b64encode(out.getvalue()).decode()})
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        expected = torch.softmax(model(pixel_values=pixels).logits, dim=-1).tolist()
    return Made(path, rows, expected, format="huggingface")


def hf_tokens(folder: Path) -> Made:
    import torch

    labels = ["O", "B-THING", "I-THING"]
    path, tokenizer, model = _tiny_bert(folder, "tiny-bert-ner", "BertForTokenClassification",
                                        labels)
    expected = []
    for text in TEXTS:
        enc = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            index = model(**enc).logits[0].argmax(dim=-1).tolist()
        expected.append([labels[i] for i in index])
    return Made(path, TEXTS, expected, compare="predictions", format="huggingface",
                pick=lambda row: [t["label"] for t in row])


def hf_embeddings(folder: Path) -> Made:
    import torch

    path, tokenizer, model = _tiny_bert(folder, "tiny-bert-embed", "BertModel", ["x"])
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.normalize(pooled, dim=1).tolist()
    return Made(path, TEXTS, expected, ["--task", "feature-extraction"], compare="predictions",
                format="huggingface")


def mlflow_folder(folder: Path) -> Made:
    """An MLflow sklearn flavor, laid out as mlflow.sklearn.save_model does,
    with a signature of typed columns (age a long: a whole number)."""
    import cloudpickle

    pipe = _people_pipeline()
    path = folder / "people-mlflow"
    path.mkdir()
    with (path / "model.pkl").open("wb") as fh:
        cloudpickle.dump(pipe, fh)
    signature = json.dumps([{"type": "long", "name": "age", "required": True},
                            {"type": "double", "name": "income", "required": True},
                            {"type": "string", "name": "city", "required": True}])
    (path / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
        "    model_path: model.pkl\n  sklearn:\n    pickled_model: model.pkl\n"
        "    serialization_format: cloudpickle\n    sklearn_version: 1.5.0\n"
        f"signature:\n  inputs: '{signature}'\n  outputs: '[{{\"type\": \"long\"}}]'\n")
    return Made(path, PEOPLE, _people_proba(pipe, PEOPLE), ["--trust-pickle"], format="joblib")


MAKERS: dict[str, Callable[[Path], Made]] = {
    "people-skops": skops_pipeline, "people-joblib": joblib_pipeline,
    "iris-xgb": xgboost_iris, "iris-lgb": lightgbm_iris, "linear-onnx": onnx_graph,
    "net-ts": torchscript_net, "net-export": exported_net, "tiny-bert": hf_classifier,
    "tiny-bert-ner": hf_tokens, "tiny-bert-embed": hf_embeddings, "tiny-vit": hf_image_classifier,
    "people-mlflow": mlflow_folder,
}
