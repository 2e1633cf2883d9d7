"""PyTorch models: an architecture from ``turnout.ml.nets`` plus a state dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from turnout.ml.adapters.base import Prediction
from turnout.ml.artifacts import ModelMeta
from turnout.ml.nets import build_net


class TorchClassifier:
    def __init__(self, net: torch.nn.Module, device: torch.device, classes: list[Any] | None):
        self.net = net
        self.device = device
        self.classes = classes

    def predict(self, rows: list[Any]) -> Prediction:
        with torch.inference_mode():
            x = torch.tensor(rows, dtype=torch.float32, device=self.device)
            proba = torch.softmax(self.net(x), dim=1)
            index = proba.argmax(dim=1).tolist()
            probabilities = proba.cpu().tolist()
        labels = [self.classes[i] for i in index] if self.classes else index
        return Prediction(labels, probabilities)


class TorchAdapter:
    def load(
        self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]
    ) -> TorchClassifier:
        if not meta.architecture:
            raise ValueError(f"model {meta.name!r}: the metadata names no architecture")
        dev = torch.device(device)
        net = build_net(meta.architecture, **meta.architecture_args)
        # weights_only: the file holds tensors and nothing that runs code.
        state = torch.load(path, map_location=dev, weights_only=True)
        net.load_state_dict(state)
        net.to(dev).eval()
        return TorchClassifier(net, dev, meta.classes)
