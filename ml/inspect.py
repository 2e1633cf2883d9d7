"""The throwaway process ``turnout models add`` runs a model in
(``python -m turnout.ml.inspect``): load it as a worker would, read its
input and output schemas, run the sample (the operator's, or one made from
the schema) and say what came out, as one JSON object on stdout.

A pickle runs code when it is loaded; this is the only process at add that
loads one, and it exits when done. The CLI's and the router's processes
never load a model.
"""

from __future__ import annotations

import json
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from turnout.core.errors import InvalidInput
from turnout.core.inputs import Image, parse_schema
from turnout.ml import formats
from turnout.ml.formats import FormatError
from turnout.ml.formats.outputs import describe
from turnout.ml.images import model_rows

_LIBRARIES = {
    "skops": ("scikit-learn", "skops", "numpy", "pandas"),
    "joblib": ("scikit-learn", "joblib", "numpy", "pandas"),
    "onnx": ("onnxruntime", "numpy"),
    "torchscript": ("torch",), "torch-export": ("torch",),
    "huggingface": ("transformers", "tokenizers", "safetensors", "torch"),
    "xgboost": ("xgboost", "xgboost-cpu", "numpy"), "lightgbm": ("lightgbm", "numpy"),
}


def inspect(request: dict[str, Any]) -> dict[str, Any]:
    folder = Path(request["folder"])
    meta: dict[str, Any] = dict(request["meta"])
    sample = request.get("sample")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = formats.load(folder, meta, "cpu")
        inferred, output = formats.infer(folder, meta, loaded)
    schema = meta.get("input") or inferred
    if schema is None:
        if not sample:
            raise FormatError("the file carries no input shapes (TorchScript); pass --sample "
                              'FILE, a JSON file {"inputs": [row, ...]}')
        from turnout.ml.formats.torch import schema_from_sample

        schema = schema_from_sample(sample)
    examples = {c["name"]: c.pop("example") for c in schema.get("columns", []) if "example" in c}
    try:
        kind = parse_schema(schema)
    except ValueError as exc:
        raise FormatError(f"the inferred input schema is not valid: {exc}") from None
    if hasattr(loaded, "schema"):
        loaded.schema = kind.describe()
    if not sample:
        sample = kind.warm_up()
        if isinstance(kind, Image):  # the warm-up is what a worker gets; sent, it is b64
            sample = [{"b64": row} for row in sample]
        if examples:  # known categories, so that an encoder that refuses unknown ones passes
            sample = [{**row, **{k: v for k, v in examples.items() if k in row}} for row in sample]
    try:
        rows = kind.rows(request.get("name", "model"), list(sample))
    except InvalidInput as exc:
        raise FormatError(f"the sample does not fit the input schema: {exc}") from None
    try:
        prediction = loaded.predict(model_rows(kind, rows))
    except Exception as exc:  # noqa: BLE001 - the model's own failure, named
        raise FormatError(f"the sample failed: {type(exc).__name__}: {exc}") from None
    if len(prediction.predictions) != len(rows):
        raise FormatError(f"the model answered {len(prediction.predictions)} rows for "
                          f"{len(rows)}")
    return {
        "input": kind.describe(),
        "output": {**describe(prediction), **output},
        "sample": rows,
        "answer": {"predictions": prediction.predictions,
                   "probabilities": prediction.probabilities},
        "libraries": _versions(meta["format"]),
        "warnings": list(getattr(loaded, "warnings", [])),
        "task": getattr(loaded, "task", None),
    }


def _versions(fmt: str) -> dict[str, str]:
    found = {}
    for name in _LIBRARIES.get(fmt, ()):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        answer = inspect(request)
    except (FormatError, InvalidInput) as exc:
        answer, code = {"error": str(exc)}, 1
    except Exception as exc:  # noqa: BLE001 - whatever the loader raised, named
        answer, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    else:
        code = 0
    sys.stdout.write("\n" + json.dumps(answer, default=str) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
