"""Network architectures, by name. A state dict saved from one of these is
loaded back into the same architecture, so artifacts hold weights only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A small convolutional net for scikit-learn's 8x8 digits, taking a row of
    64 pixel values in 0..16 (the data's own scale)."""

    def __init__(self, channels: int = 32, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * 2 * 4 * 4, hidden),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(hidden, classes),
        )

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        # The scaling lives in the net so that clients send the raw 0..16 values.
        x = rows.reshape(-1, 1, 8, 8) / 16.0
        logits: torch.Tensor = self.head(self.features(x))
        return logits


ARCHITECTURES: dict[str, type[nn.Module]] = {"digits_cnn": DigitsCNN}


def build_net(name: str, **kwargs: Any) -> nn.Module:
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls(**kwargs)
