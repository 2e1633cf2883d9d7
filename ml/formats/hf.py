"""Hugging Face ``save_pretrained`` folders with safetensors weights, for
text-classification, token-classification and feature-extraction
(embeddings: mean-pooled over the real tokens, L2-normalised). Loaded from
local files only, no remote code, the hub off."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from turnout.ml.adapters.base import Prediction
from turnout.ml.formats import FormatError

_HEADS = {"text-classification": "AutoModelForSequenceClassification",
          "token-classification": "AutoModelForTokenClassification",
          "feature-extraction": "AutoModel"}


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


def load(folder: Path, meta: dict[str, Any], device: str) -> HfModel:
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


def infer(folder: Path, meta: dict[str, Any], loaded: HfModel) -> tuple[dict[str, Any], dict[str, Any]]:
    output: dict[str, Any] = {"task": loaded.task}
    if loaded.task != "feature-extraction":
        output["labels"] = [loaded.labels.get(i, i) for i in sorted(loaded.labels)]
    # Characters, not tokens: longer strings are truncated to the model's
    # tokens, so the bound only keeps absurd bodies out.
    return {"kind": "text", "max_length": min(100_000, 16 * loaded.max_tokens)}, output
