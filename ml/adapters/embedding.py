"""Sentence embeddings from a BERT-style encoder: tokenise, encode, mean-pool
over the real tokens, L2-normalise (what sentence-transformers does for
all-MiniLM-L6-v2), one vector per input string.

Loaded from the model's own folder with the hub switched off: nothing is
fetched at run time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from turnout.ml.adapters.base import Prediction
from turnout.ml.artifacts import ModelMeta


class SentenceEncoder:
    def __init__(self, tokenizer: Any, model: Any, device: Any, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.max_tokens = max_tokens

    def predict(self, rows: list[Any]) -> Prediction:
        import torch

        encoded = self.tokenizer.encode_batch(rows)
        ids = torch.tensor([e.ids for e in encoded], device=self.device)
        mask = torch.tensor([e.attention_mask for e in encoded], device=self.device)
        types = torch.tensor([e.type_ids for e in encoded], device=self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            tokens = hidden.last_hidden_state
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
            # Seven decimals is float32's precision for numbers below 1; the
            # JSON is half the size, and as exact as the model.
            return Prediction(vectors.float().cpu().double().numpy().round(7).tolist())


class EmbeddingAdapter:
    def load(
        self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]
    ) -> SentenceEncoder:
        # Belt and braces: the folder has every file, and the hub stays off.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = path.parent
        max_tokens = int(options.get("max_tokens", meta.architecture_args.get("max_tokens", 256)))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=max_tokens)
        pad = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
        dev = torch.device(device)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        model.to(dev).eval()
        return SentenceEncoder(tokenizer, model, dev, max_tokens)
