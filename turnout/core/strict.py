"""The base of every operator-facing schema: unknown keys are refused (a typo
is an error, not a silent default) and values are frozen once loaded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
