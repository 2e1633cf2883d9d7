"""Hugging Face ``save_pretrained`` folders with safetensors weights, for
text-classification, token-classification, feature-extraction (embeddings:
mean-pooled over the real tokens, L2-normalised) and image-classification
(an ``image`` input whose size and normalisation are the folder's own image
processor's, decoded by the worker). Loaded from local files only, no remote
code, the hub off."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from turnout.ml.adapters.base import Prediction
from turnout.ml.formats import FormatError

_HEADS = {"text-classification": "AutoModelForSequenceClassification",
          "token-classification": "AutoModelForTokenClassification",
          "feature-extraction": "AutoModel",
          "image-classification": "AutoModelForImageClassification"}


def task_of(folder: Path, asked: str | None) -> str:
    if asked:
        if asked not in _HEADS:
            raise FormatError(f"--task {asked!r}: expected one of {', '.join(_HEADS)}")
        return asked
    import json

    config = json.loads((folder / "config.json").read_text())
    arch = " ".join(config.get("architectures") or [])
    if "SequenceClassification" in arch:
        return "text-classification"
    if "TokenClassification" in arch:
        return "token-classification"
    if "ImageClassification" in arch:
        return "image-classification"
    return "feature-extraction"


class HfModel:
    def __init__(self, tokenizer: Any, model: Any, device: Any, task: str, max_tokens: int):
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.task = task
        self.max_tokens = max_tokens
        self.labels = getattr(model.config, "id2label", None) or {}

    def predict(self, rows: list[Any]) -> Prediction:
        import torch

        enc = self.tokenizer(rows, padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**enc)
        if self.task == "text-classification":
            proba = torch.softmax(out.logits.float(), dim=-1).cpu()
            index = proba.argmax(dim=-1).tolist()
            return Prediction([self.labels.get(i, i) for i in index], proba.double().tolist())
        if self.task == "token-classification":
            proba = torch.softmax(out.logits.float(), dim=-1).cpu()
            result = []
            for r in range(len(rows)):
                ids = enc["input_ids"][r].tolist()
                mask = enc["attention_mask"][r].tolist()
                special = set(self.tokenizer.all_special_ids)
                tokens = []
                for t, (tid, m) in enumerate(zip(ids, mask, strict=True)):
                    if not m or tid in special:
                        continue
                    p = proba[r, t]
                    k = int(p.argmax())
                    tokens.append({"token": self.tokenizer.convert_ids_to_tokens(tid),
                                   "label": self.labels.get(k, k), "score": round(float(p[k]), 7)})
                result.append(tokens)
            return Prediction(result)
        hidden = out.last_hidden_state.float()
        weights = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return Prediction(vectors.cpu().double().numpy().round(7).tolist())


class HfImageModel:
    """An image classifier: rows are decoded images, ``[channels, h, w]``."""

    def __init__(self, model: Any, device: Any, processor: dict[str, Any]) -> None:
        self.model = model
        self.device = device
        self.task = "image-classification"
        self.processor = processor
        self.labels = getattr(model.config, "id2label", None) or {}

    def predict(self, rows: list[Any]) -> Prediction:
        import torch

        x = torch.tensor(rows, dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            logits = self.model(pixel_values=x).logits
        proba = torch.softmax(logits.float(), dim=-1).cpu()
        index = proba.argmax(dim=-1).tolist()
        return Prediction([self.labels.get(i, i) for i in index], proba.double().tolist())

    def schema(self) -> dict[str, Any]:
        """The image input the folder's image processor describes."""
        p = self.processor
        size = p.get("size") or {}
        if "height" in size and "width" in size:
            hw = [int(size["height"]), int(size["width"])]
        elif "shortest_edge" in size:
            hw = [int(size["shortest_edge"])] * 2
        else:
            side = int(getattr(self.model.config, "image_size", 224))
            hw = [side, side]
        channels = int(getattr(self.model.config, "num_channels", 3))
        scale = float(p.get("rescale_factor", 1 / 255)) if p.get("do_rescale", True) else 1.0
        normalize: dict[str, Any] = {"scale": scale}
        if p.get("do_normalize", True) and p.get("image_mean") is not None:
            normalize |= {"mean": list(p["image_mean"]), "std": list(p["image_std"])}
        crop = p.get("crop_size") if p.get("do_center_crop") else None
        return {"kind": "image", "size": hw, "channels": channels, "layout": "chw",
                "resize": "shorter" if crop else "stretch", "normalize": normalize}


def load(folder: Path, meta: dict[str, Any], device: str) -> HfModel | HfImageModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    where = (folder / meta["artifact"]).parent
    task = meta.get("task") or task_of(where, None)
    if task == "image-classification":
        import json

        model = transformers.AutoModelForImageClassification.from_pretrained(
            str(where), local_files_only=True, trust_remote_code=False, use_safetensors=True)
        dev = torch.device(device)
        model.to(dev).eval()
        processor_file = where / "preprocessor_config.json"
        processor = json.loads(processor_file.read_text()) if processor_file.exists() else {}
        return HfImageModel(model, dev, processor)
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(where), local_files_only=True, trust_remote_code=False)
    head = getattr(transformers, _HEADS[task])
    model = head.from_pretrained(str(where), local_files_only=True, trust_remote_code=False,
                                 use_safetensors=True)
    dev = torch.device(device)
    model.to(dev).eval()
    limit = getattr(tokenizer, "model_max_length", 512)
    max_tokens = int(min(limit if limit < 100_000 else 512,
                         getattr(model.config, "max_position_embeddings", 512)))
    return HfModel(tokenizer, model, dev, task, max_tokens)


def infer(folder: Path, meta: dict[str, Any], loaded: HfModel | HfImageModel
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    output: dict[str, Any] = {"task": loaded.task}
    if isinstance(loaded, HfImageModel):
        output["labels"] = [loaded.labels.get(i, i) for i in sorted(loaded.labels)]
        return loaded.schema(), output
    if loaded.task != "feature-extraction":
        output["labels"] = [loaded.labels.get(i, i) for i in sorted(loaded.labels)]
    # Characters, not tokens: longer strings are truncated to the model's
    # tokens, so the bound only keeps absurd bodies out.
    return {"kind": "text", "max_length": min(100_000, 16 * loaded.max_tokens)}, output
