"""The model formats ``turnout models add`` takes, and how one is recognised
from its file or folder: by reading names and a few bytes, never by loading
it (loading is ``turnout.ml.formats``', in a throwaway process).

An MLflow model folder (``MLmodel``) is read here too, with no MLflow
dependency: its flavor says which format the model inside is, and its
signature gives typed columns or tensors.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from turnout.core.errors import ModelNotAdded


@dataclass(frozen=True)
class Format:
    name: str
    # The route's framework (which adapter loads it).
    framework: str
    # Modules the runtime needs, and the extra that installs them.
    modules: tuple[str, ...]
    extra: str
    # Loading it unpickles: only with --trust-pickle.
    pickle: bool = False
    # Where its jobs go by default: scikit-learn and boosted trees on the CPU,
    # deep models on a GPU with the CPU as fallback.
    queue: str = "cpu"
    fallback: str | None = None
    # The file carries no input shapes, so `add` needs --sample.
    needs_sample: bool = False


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("skops", "sklearn", ("skops", "sklearn"), "server"),
    Format("joblib", "sklearn", ("joblib", "sklearn"), "server", pickle=True),
    Format("onnx", "onnx", ("onnxruntime",), "onnx", queue="gpu", fallback="cpu"),
    Format("torchscript", "torch", ("torch",), "server", queue="gpu", fallback="cpu",
           needs_sample=True),
    Format("torch-export", "torch", ("torch",), "server", queue="gpu", fallback="cpu"),
    Format("huggingface", "huggingface", ("transformers", "safetensors"), "server",
           queue="gpu", fallback="cpu"),
    Format("xgboost", "xgboost", ("xgboost",), "xgboost"),
    Format("lightgbm", "lightgbm", ("lightgbm",), "lightgbm"),
)}
# `--framework` may name a format or one of these.
ALIASES = {"sklearn": "skops", "pickle": "joblib", "pytorch": "torchscript", "torch": "torchscript",
           "pt2": "torch-export", "transformers": "huggingface", "hf": "huggingface",
           "xgb": "xgboost", "lgbm": "lightgbm"}
HF_TASKS = ("text-classification", "token-classification", "feature-extraction")
MLMODEL = "MLmodel"
_EXTENSIONS = {".skops": "skops", ".joblib": "joblib", ".pkl": "joblib", ".pickle": "joblib",
               ".onnx": "onnx", ".pt2": "torch-export", ".ubj": "xgboost", ".xgb": "xgboost",
               ".lgb": "lightgbm"}


@dataclass(frozen=True)
class Detected:
    format: Format
    # The model's file inside the added folder (a Hugging Face folder's config.json).
    main: str
    # Where the format came from, and what an MLflow signature said.
    source: str = "file"
    input: dict[str, Any] | None = None
    task: str | None = None
    notes: list[str] = field(default_factory=list)


def detect(path: Path, framework: str | None = None) -> Detected:
    """The format of the model at ``path`` (a file, or a folder), or
    ``ModelNotAdded`` saying what was found and what is taken."""
    if framework is not None:
        name = ALIASES.get(framework, framework)
        if name == "mlflow":
            return _mlflow(path)
        if name not in FORMATS:
            raise ModelNotAdded(f"--framework {framework!r}: expected one of "
                                f"{', '.join([*FORMATS, 'mlflow'])}")
        if name == "skops" and path.is_file() and path.suffix in (".joblib", ".pkl", ".pickle"):
            name = "joblib"
        return Detected(FORMATS[name], _main_file(path, FORMATS[name]))
    if path.is_dir():
        if (path / MLMODEL).is_file():
            return _mlflow(path)
        if (path / "config.json").is_file():
            if any(path.glob("*.safetensors")):
                return Detected(FORMATS["huggingface"], "config.json")
            raise ModelNotAdded(
                f"{path.name}: a Hugging Face folder without safetensors weights (a "
                "pytorch_model.bin is a pickle); save it with save_pretrained(..., "
                "safe_serialization=True)")
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        models = [p for p in files if _file_format(p) is not None]
        if len(models) == 1:
            return Detected(FORMATS[_file_format(models[0]) or ""], models[0].name)
        raise ModelNotAdded(
            f"{path.name}: cannot tell the format of this folder ("
            + (f"{len(models)} model files" if models else "no model file, MLmodel or config.json")
            + "); pass --framework")
    found = _file_format(path)
    if found is None:
        raise ModelNotAdded(
            f"{path.name}: unknown model format; Turnout takes .skops, .joblib/.pkl, .onnx, "
            "TorchScript (.pt), torch.export (.pt2), XGBoost (.json/.ubj), LightGBM (.txt), "
            "a Hugging Face or MLflow folder, or --framework")
    return Detected(FORMATS[found], path.name)


def _main_file(path: Path, fmt: Format) -> str:
    if path.is_file():
        return path.name
    if fmt.name == "huggingface":
        return "config.json"
    for p in sorted(path.iterdir()):
        if _file_format(p) == fmt.name:
            return p.name
    raise ModelNotAdded(f"{path.name}: no {fmt.name} model file in this folder")


def _file_format(path: Path) -> str | None:
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    head = _head(path, 256)
    if suffix in (".pt", ".pth", ".ts", ".torchscript", ".zip") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        raise ModelNotAdded(
            f"{path.name}: a torch.save file (a state dict or a pickled module), not "
            "TorchScript; export it with torch.jit.script(...).save() or torch.export, "
            "or serve a state dict with a route whose framework is module:Class")
    if suffix == ".json" and b'"learner"' in _head(path, 1 << 16):
        return "xgboost"
    if suffix in (".txt", ".model") and head.startswith(b"tree\n"):
        return "lightgbm"
    return None


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


# MLflow's flavors, as the format of the model they hold.
_FLAVORS = ("sklearn", "onnx", "xgboost", "lightgbm", "transformers")
_MLFLOW_TYPES = {"double": "number", "float": "number", "long": "integer", "integer": "integer",
                 "string": "string", "boolean": "boolean"}


def _mlflow(path: Path) -> Detected:
    mlmodel = path / MLMODEL
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelNotAdded(f"{mlmodel}: cannot read it: {exc}") from None
    flavors = (doc or {}).get("flavors") or {}
    flavor = next((f for f in _FLAVORS if f in flavors), None)
    if flavor is None:
        raise ModelNotAdded(
            f"{mlmodel}: flavors {', '.join(flavors) or 'none'}; Turnout serves the MLflow "
            f"flavors {', '.join(_FLAVORS)}")
    spec = flavors[flavor] or {}
    notes = [f"MLflow flavor {flavor}"]
    if flavor == "sklearn":
        main = str(spec.get("pickled_model", "model.pkl"))
        fmt = "skops" if spec.get("serialization_format") == "skops" or main.endswith(".skops") \
            else "joblib"
    elif flavor == "transformers":
        sub = "model" if (path / "model" / "config.json").is_file() else "."
        main, fmt = f"{sub}/config.json".removeprefix("./"), "huggingface"
    else:
        main = str(spec.get("data", ""))
        fmt = flavor
    task = spec.get("task") if flavor == "transformers" else None
    return Detected(FORMATS[fmt], main, source="mlflow", input=_signature(doc, mlmodel),
                    task=task, notes=notes)


def _signature(doc: dict[str, Any], where: Path) -> dict[str, Any] | None:
    """The input schema an MLmodel's signature gives, as an input kind's JSON."""
    raw = ((doc or {}).get("signature") or {}).get("inputs")
    if not raw:
        return None
    try:
        specs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise ModelNotAdded(f"{where}: the signature's inputs are not JSON: {exc}") from None
    if all(s.get("type") == "tensor" for s in specs):
        inputs = []
        for i, s in enumerate(specs):
            tensor = s.get("tensor-spec") or {}
            shape = list(tensor.get("shape") or [-1])
            inputs.append({"name": s.get("name") or f"input_{i}",
                           "dtype": str(tensor.get("dtype", "float32")), "shape": shape[1:]})
        return {"kind": "tensor", "inputs": inputs}
    columns = []
    for s in specs:
        kind = _MLFLOW_TYPES.get(str(s.get("type")))
        if kind is None or not s.get("name"):
            raise ModelNotAdded(f"{where}: signature column {s!r}: Turnout takes named "
                                f"columns of types {', '.join(_MLFLOW_TYPES)}")
        column: dict[str, Any] = {"name": s["name"], "type": kind}
        if s.get("required") is False:
            column["nullable"] = True
        columns.append(column)
    return {"kind": "columns", "columns": columns}
